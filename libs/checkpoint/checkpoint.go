package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// HashSize is the size of a log root.
const HashSize = sha256.Size

// ErrMalformed is wrapped by every error about the syntax of a checkpoint,
// a note or an origin.
var ErrMalformed = errors.New("malformed checkpoint")

// Checkpoint is the text of a checkpoint note: a log's origin, size and
// root, and optional extension lines.
type Checkpoint struct {
	// Origin names the log: witnz/<cluster>/<schema>.<table> (see [Origin]).
	Origin string
	// Size is the number of leaves in the tree.
	Size uint64
	// Root is the RFC 6962 root of the first Size leaves.
	Root [HashSize]byte
	// Extensions are extra lines after the root, without their newline.
	// Cosigners make no statement about them; witnz writes none.
	Extensions []string
}

// Text returns the note text: origin, size, base64 root and extension
// lines, each ending in a newline. It fails if a line would be invalid.
func (c Checkpoint) Text() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root[:]))
	b.WriteByte('\n')
	for _, e := range c.Extensions {
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

func (c Checkpoint) validate() error {
	if err := checkLine(c.Origin); err != nil {
		return fmt.Errorf("%w: origin: %v", ErrMalformed, err)
	}
	for i, e := range c.Extensions {
		if err := checkLine(e); err != nil {
			return fmt.Errorf("%w: extension line %d: %v", ErrMalformed, i+1, err)
		}
	}
	return nil
}

// checkLine accepts a non-empty line of valid UTF-8 without control
// characters, as the signed-note format requires.
func checkLine(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return fmt.Errorf("invalid UTF-8 at byte %d", i)
		case r < 0x20 || r == 0x7f:
			return fmt.Errorf("control character %#x at byte %d", r, i)
		}
	}
	return nil
}

// ParseText parses a checkpoint's note text strictly: at least three
// newline-terminated lines; a non-empty origin; the size in decimal without
// leading zeros; the root in canonical padded base64 of exactly 32 bytes;
// non-empty extension lines.
func ParseText(text []byte) (Checkpoint, error) {
	var c Checkpoint
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return c, fmt.Errorf("%w: text does not end in a newline", ErrMalformed)
	}
	lines := strings.Split(string(text[:len(text)-1]), "\n")
	if len(lines) < 3 {
		return c, fmt.Errorf("%w: %d lines, want origin, size and root", ErrMalformed, len(lines))
	}
	if err := checkLine(lines[0]); err != nil {
		return c, fmt.Errorf("%w: origin line: %v", ErrMalformed, err)
	}
	c.Origin = lines[0]
	size, err := parseSize(lines[1])
	if err != nil {
		return c, fmt.Errorf("%w: size line %q: %v", ErrMalformed, lines[1], err)
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != HashSize || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return c, fmt.Errorf("%w: root line %q is not the base64 of %d bytes", ErrMalformed, lines[2], HashSize)
	}
	copy(c.Root[:], root)
	for i, e := range lines[3:] {
		if err := checkLine(e); err != nil {
			return c, fmt.Errorf("%w: extension line %d: %v", ErrMalformed, i+1, err)
		}
		c.Extensions = append(c.Extensions, e)
	}
	return c, nil
}

func parseSize(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, errors.New("not a decimal number")
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, errors.New("leading zero")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New("out of range")
	}
	return n, nil
}

// originPrefix starts every witnz origin.
const originPrefix = "witnz/"

// Origin returns the origin line of a table's log:
// "witnz/" + cluster + "/" + table, with table the "schema.table" name the
// services use. The cluster name is 1 to 64 characters of [A-Za-z0-9._-].
// In the table name, ASCII control characters, space, '%', '+', and
// non-ASCII characters that are spaces or not graphic are percent-encoded
// (%XX, upper-case hex, per byte) so the origin stays a single line without
// spaces or pluses, as tlog-checkpoint recommends; usual names are unchanged.
func Origin(cluster, table string) (string, error) {
	if err := checkCluster(cluster); err != nil {
		return "", err
	}
	if table == "" {
		return "", fmt.Errorf("%w: empty table name", ErrMalformed)
	}
	return originPrefix + cluster + "/" + escapeTable(table), nil
}

// ParseOrigin splits an origin made by [Origin] into the cluster and the
// table name. It rejects origins that [Origin] would not produce.
func ParseOrigin(origin string) (cluster, table string, err error) {
	rest, ok := strings.CutPrefix(origin, originPrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: origin %q does not start with %q", ErrMalformed, origin, originPrefix)
	}
	cluster, escaped, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: origin %q has no table after the cluster", ErrMalformed, origin)
	}
	if err := checkCluster(cluster); err != nil {
		return "", "", err
	}
	table, err = unescapeTable(escaped)
	if err != nil || table == "" || escapeTable(table) != escaped {
		return "", "", fmt.Errorf("%w: origin %q: table part is not in canonical form", ErrMalformed, origin)
	}
	return cluster, table, nil
}

func checkCluster(cluster string) error {
	if cluster == "" || len(cluster) > 64 {
		return fmt.Errorf("%w: cluster name %q must be 1 to 64 characters", ErrMalformed, cluster)
	}
	for _, r := range cluster {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: cluster name %q may only contain letters, digits, '.', '_' and '-'", ErrMalformed, cluster)
		}
	}
	return nil
}

const upperHex = "0123456789ABCDEF"

func escapeTable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		escape := false
		switch {
		case r == utf8.RuneError && size == 1:
			escape = true
		case r < utf8.RuneSelf:
			escape = r <= ' ' || r == 0x7f || r == '%' || r == '+'
		default:
			escape = unicode.IsSpace(r) || !unicode.IsGraphic(r)
		}
		if escape {
			for _, c := range []byte(s[i : i+size]) {
				b.WriteByte('%')
				b.WriteByte(upperHex[c>>4])
				b.WriteByte(upperHex[c&0xf])
			}
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func unescapeTable(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("truncated escape")
		}
		hi, lo := strings.IndexByte(upperHex, s[i+1]), strings.IndexByte(upperHex, s[i+2])
		if hi < 0 || lo < 0 {
			return "", errors.New("bad escape")
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), nil
}
