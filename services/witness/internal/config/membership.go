package config

import (
	"errors"
	"flag"
	"strconv"
)

// DefaultMinVoters is the default of --min-voters.
const DefaultMinVoters = 3

// maxMinVoters bounds --min-voters.
const maxMinVoters = 255

// Membership configures membership changes (MembershipService).
type Membership struct {
	// MinVoters is the fewest voters a removal may leave (--min-voters,
	// env WITNZ_MIN_VOTERS); zero means DefaultMinVoters, and a negative
	// value records a value that is not a number.
	MinVoters int
}

// minVoters is the --min-voters flag.
type minVoters struct{ m *Membership }

func (v minVoters) String() string {
	if v.m == nil || v.m.MinVoters == 0 {
		return strconv.Itoa(DefaultMinVoters)
	}
	return strconv.Itoa(v.m.MinVoters)
}

func (v minVoters) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxMinVoters {
		v.m.MinVoters = -1
		return errMinVoters
	}
	v.m.MinVoters = n
	return nil
}

var errMinVoters = errors.New("--min-voters (env WITNZ_MIN_VOTERS) wants a number of voters between 1 and 255, e.g. --min-voters 3")

func (m *Membership) register(fs *flag.FlagSet, getenv func(string) string) {
	if s := getenv("WITNZ_MIN_VOTERS"); s != "" {
		// An invalid value is reported by Validate, unless the flag
		// replaces it.
		_ = minVoters{m}.Set(s)
	}
	fs.Var(minVoters{m}, "min-voters", "fewest voters a membership change may leave (env WITNZ_MIN_VOTERS); removing a voter below it, or below a majority of the voters, is refused")
}

// Validate checks the membership settings.
func (m Membership) Validate() error {
	if m.MinVoters < 0 || m.MinVoters > maxMinVoters {
		return errMinVoters
	}
	return nil
}
