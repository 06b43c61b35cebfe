package commitment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrTooManyColumns means a row has more columns than the encoding's uint16
// count allows (PostgreSQL itself stops at 1600).
var ErrTooManyColumns = errors.New("row has more than 65535 columns")

// AppendRow appends the row encoding of values to dst. A nil value is SQL
// NULL; a non-nil empty slice is an empty value. Values must be PostgreSQL's
// binary send format of each column, in attnum order, with dropped and
// generated columns left out.
func AppendRow(dst []byte, values [][]byte) ([]byte, error) {
	if len(values) > math.MaxUint16 {
		return dst, ErrTooManyColumns
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			dst = binary.BigEndian.AppendUint32(dst, math.MaxUint32) // int32 -1
			continue
		}
		if len(v) > math.MaxInt32 {
			return dst, fmt.Errorf("column value of %d bytes exceeds the int32 length prefix", len(v))
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst, nil
}

// SplitRow decodes a row encoding back into its values (nil for NULL). It
// rejects truncated input and trailing bytes.
func SplitRow(enc []byte) ([][]byte, error) {
	if len(enc) < 2 {
		return nil, errors.New("row encoding shorter than its column count")
	}
	n := int(binary.BigEndian.Uint16(enc))
	enc = enc[2:]
	values := make([][]byte, 0, n)
	for i := range n {
		if len(enc) < 4 {
			return nil, fmt.Errorf("row encoding truncated in column %d", i+1)
		}
		l := int32(binary.BigEndian.Uint32(enc))
		enc = enc[4:]
		switch {
		case l == -1:
			values = append(values, nil)
		case l < 0:
			return nil, fmt.Errorf("column %d has invalid length %d", i+1, l)
		case int(l) > len(enc):
			return nil, fmt.Errorf("column %d length %d exceeds the remaining %d bytes", i+1, l, len(enc))
		default:
			values = append(values, enc[:l:l])
			enc = enc[l:]
		}
	}
	if len(enc) != 0 {
		return nil, fmt.Errorf("row encoding has %d trailing bytes", len(enc))
	}
	return values, nil
}
