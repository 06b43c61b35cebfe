package checkpoint

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Errors of policy evaluation.
var (
	// ErrPolicy is wrapped by every error about a policy file.
	ErrPolicy = errors.New("invalid policy")
	// ErrLogSignature: the policy names log keys and none of them signed.
	ErrLogSignature = errors.New("no valid log signature")
	// ErrQuorum: too few witnesses cosigned.
	ErrQuorum = errors.New("too few cosignatures")
)

// Role says whether a signature came from a log key or a witness.
type Role int

// Roles.
const (
	RoleLog Role = iota + 1
	RoleWitness
)

func (r Role) String() string {
	switch r {
	case RoleLog:
		return "log"
	case RoleWitness:
		return "witness"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Signer describes a key of the policy whose signature on a checkpoint
// verified.
type Signer struct {
	Role Role
	// Label is the witness's name in the policy file ("log" for a log key).
	Label string
	// KeyName and KeyHash identify the key on the signature line.
	KeyName string
	KeyHash uint32
	// Time is when a witness cosigned (zero for a log signature).
	Time time.Time
}

// Policy decides whether a checkpoint is trusted: signed by one of its log
// keys (when it names any) and cosigned by a quorum of its witnesses.
//
// Policy file, one statement per line, '#' starts a comment (a Sigsum
// policy file with signed-note verifier keys instead of raw hex keys):
//
//	log <vkey> [url]                   a log key (type 0x01); if any log line
//	                                   is present, one of them must sign
//	witness <name> <vkey> [url]        a witness cosigner key (type 0x04)
//	group <name> <k|any|all> <name>... satisfied when k members are
//	quorum <k>                         k distinct witnesses of the file must cosign
//	quorum <name>                      the named witness or group must be satisfied
//
// Names are defined before they are used, are unique, and are neither a
// keyword (log, witness, group, quorum, any, all, none) nor a number.
// Exactly one quorum line; it must require at least one cosignature.
type Policy struct {
	logs      []*policyLog
	witnesses []*policyWitness
	quorum    component
}

type policyLog struct {
	vkey string
	v    note.Verifier
}

type policyWitness struct {
	name string
	vkey string
	url  string
	v    note.Verifier
}

// component is a witness or a group: something the quorum counts.
type component interface {
	label() string
	satisfied(ok map[*policyWitness]bool) bool
	// explain says why the component is not satisfied.
	explain(ok map[*policyWitness]bool) string
}

type group struct {
	name    string // "" for the implicit group of `quorum <k>`
	k       int
	members []component
}

func (w *policyWitness) label() string { return "witness " + w.name }
func (w *policyWitness) satisfied(ok map[*policyWitness]bool) bool {
	return ok[w]
}
func (w *policyWitness) explain(map[*policyWitness]bool) string {
	return fmt.Sprintf("no valid cosignature by witness %s (key %s)", w.name, w.v.Name())
}

func (g *group) label() string { return "group " + g.name }

func (g *group) count(ok map[*policyWitness]bool) int {
	n := 0
	for _, m := range g.members {
		if m.satisfied(ok) {
			n++
		}
	}
	return n
}

func (g *group) satisfied(ok map[*policyWitness]bool) bool { return g.count(ok) >= g.k }

func (g *group) explain(ok map[*policyWitness]bool) string {
	var have, missing, why []string
	for _, m := range g.members {
		name := strings.TrimPrefix(strings.TrimPrefix(m.label(), "witness "), "group ")
		if m.satisfied(ok) {
			have = append(have, name)
			continue
		}
		missing = append(missing, name)
		if sub, isGroup := m.(*group); isGroup {
			why = append(why, sub.label()+": "+sub.explain(ok))
		}
	}
	what := "cosignatures"
	if g.name != "" {
		what = "members of group " + g.name
	}
	s := fmt.Sprintf("have %d of %d needed %s (valid: %s; missing: %s)", len(have), g.k, what, listOrNone(have), listOrNone(missing))
	if len(why) > 0 {
		s += "; " + strings.Join(why, "; ")
	}
	return s
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

var policyKeywords = map[string]bool{"log": true, "witness": true, "group": true, "quorum": true, "any": true, "all": true, "none": true}

func validPolicyName(n string) bool {
	if n == "" || policyKeywords[n] {
		return false
	}
	if _, err := strconv.ParseUint(n, 10, 64); err == nil {
		return false
	}
	return true
}

// LoadPolicy reads and parses a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("policy file %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses a policy file (see [Policy]).
func ParsePolicy(text []byte) (*Policy, error) {
	p := &Policy{}
	names := map[string]component{}
	type keyRef struct {
		name string
		hash uint32
	}
	keys := map[keyRef]string{}
	// The cosignature/v1 message does not include the key name, so one
	// public key under two names would let one signature count twice.
	pubkeys := map[string]string{}
	addKey := func(v note.Verifier, what string) error {
		k := keyRef{v.Name(), v.KeyHash()}
		if prev, ok := keys[k]; ok {
			return fmt.Errorf("%s has the same key name and key id as %s", what, prev)
		}
		keys[k] = what
		return nil
	}
	checkURL := func(s string) error {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("%q is not an http(s) URL", s)
		}
		return nil
	}
	quorumLine := 0
	sc := bufio.NewScanner(bytes.NewReader(text))
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrPolicy, lineNo, fmt.Sprintf(format, args...))
		}
		switch f[0] {
		case "log":
			if len(f) < 2 || len(f) > 3 {
				return nil, fail("want `log <vkey> [url]`")
			}
			v, err := NewLogVerifier(f[1])
			if err != nil {
				return nil, fail("%v", err)
			}
			if len(f) == 3 {
				if err := checkURL(f[2]); err != nil {
					return nil, fail("log URL %v", err)
				}
			}
			if err := addKey(v, "log key "+v.Name()); err != nil {
				return nil, fail("%v", err)
			}
			p.logs = append(p.logs, &policyLog{vkey: f[1], v: v})
		case "witness":
			if len(f) < 3 || len(f) > 4 {
				return nil, fail("want `witness <name> <vkey> [url]`")
			}
			name := f[1]
			if !validPolicyName(name) {
				return nil, fail("%q cannot name a witness: use a name that is not a keyword or a number", name)
			}
			if _, dup := names[name]; dup {
				return nil, fail("name %q is already defined", name)
			}
			v, err := NewCosignatureVerifier(f[2])
			if err != nil {
				return nil, fail("witness %s: %v", name, err)
			}
			_, _, typed, _ := splitKey(f[2], false) // valid: NewCosignatureVerifier accepted it
			material := string(typed[1:])
			if prev, ok := pubkeys[material]; ok {
				return nil, fail("witness %s has the same public key as witness %s: each witness needs its own key", name, prev)
			}
			pubkeys[material] = name
			w := &policyWitness{name: name, vkey: f[2], v: v}
			if len(f) == 4 {
				if err := checkURL(f[3]); err != nil {
					return nil, fail("witness %s URL %v", name, err)
				}
				w.url = f[3]
			}
			if err := addKey(v, "witness "+name); err != nil {
				return nil, fail("%v", err)
			}
			names[name] = w
			p.witnesses = append(p.witnesses, w)
		case "group":
			if len(f) < 4 {
				return nil, fail("want `group <name> <k|any|all> <member>...`")
			}
			name, members := f[1], f[3:]
			if !validPolicyName(name) {
				return nil, fail("%q cannot name a group: use a name that is not a keyword or a number", name)
			}
			if _, dup := names[name]; dup {
				return nil, fail("name %q is already defined", name)
			}
			g := &group{name: name}
			seen := map[string]bool{}
			for _, m := range members {
				c, ok := names[m]
				if !ok {
					return nil, fail("group %s: %q is not a witness or group defined above", name, m)
				}
				if seen[m] {
					return nil, fail("group %s lists %q twice", name, m)
				}
				seen[m] = true
				g.members = append(g.members, c)
			}
			switch f[2] {
			case "any":
				g.k = 1
			case "all":
				g.k = len(members)
			default:
				k, err := strconv.Atoi(f[2])
				if err != nil || k < 1 || k > len(members) {
					return nil, fail("group %s: threshold %q must be any, all or a number from 1 to %d", name, f[2], len(members))
				}
				g.k = k
			}
			names[name] = g
		case "quorum":
			if len(f) != 2 {
				return nil, fail("want `quorum <k>` or `quorum <name>`")
			}
			if quorumLine != 0 {
				return nil, fail("second quorum line (the first is line %d)", quorumLine)
			}
			quorumLine = lineNo
			switch k, err := strconv.Atoi(f[1]); {
			case f[1] == "none":
				return nil, fail("quorum none is not accepted: a witnz policy must require at least one witness cosignature")
			case err == nil:
				if k < 1 || k > len(p.witnesses) {
					return nil, fail("quorum %d: must be from 1 to the %d witness(es) defined above", k, len(p.witnesses))
				}
				all := &group{k: k}
				for _, w := range p.witnesses {
					all.members = append(all.members, w)
				}
				p.quorum = all
			default:
				c, ok := names[f[1]]
				if !ok {
					return nil, fail("quorum %q is not a number or a witness or group defined above", f[1])
				}
				p.quorum = c
			}
		default:
			return nil, fail("unknown statement %q (want log, witness, group or quorum)", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	if p.quorum == nil {
		return nil, fmt.Errorf("%w: no quorum line: add e.g. `quorum 2` after the witness lines", ErrPolicy)
	}
	return p, nil
}

// Describe says in words what the policy requires, e.g. "a signature by log
// key witnz-log and cosignatures by 2 of the witnesses w1, w2, w3".
func (p *Policy) Describe() string {
	var s string
	if len(p.logs) > 0 {
		names := make([]string, len(p.logs))
		for i, l := range p.logs {
			names[i] = l.v.Name()
		}
		s = "a signature by log key " + strings.Join(names, " or ") + " and "
	}
	return s + describe(p.quorum)
}

func describe(c component) string {
	switch c := c.(type) {
	case *policyWitness:
		return "a cosignature by witness " + c.name
	case *group:
		parts := make([]string, len(c.members))
		for i, m := range c.members {
			if w, ok := m.(*policyWitness); ok {
				parts[i] = w.name
			} else {
				parts[i] = "(" + describe(m) + ")"
			}
		}
		prefix := "cosignatures by "
		if c.name != "" {
			prefix = "group " + c.name + ": "
		}
		return fmt.Sprintf("%s%d of %s", prefix, c.k, strings.Join(parts, ", "))
	}
	return ""
}

// Verifiers returns the verifiers of every key of the policy.
func (p *Policy) Verifiers() note.Verifiers {
	var vs []note.Verifier
	for _, l := range p.logs {
		vs = append(vs, l.v)
	}
	for _, w := range p.witnesses {
		vs = append(vs, w.v)
	}
	return note.VerifierList(vs...)
}

// Verify checks a signed checkpoint against the policy: the syntax is
// strict; every signature by a key of the policy must verify; when the
// policy names log keys, one of them must have signed; and the quorum of
// witness cosignatures must be met. Signatures by other keys are ignored.
// It returns the checkpoint and the policy keys whose signatures verified,
// in the order of the signature lines.
func (p *Policy) Verify(signed []byte) (Checkpoint, []Signer, error) {
	c, sigs, err := Parse(signed)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	var verified []note.Signature
	n, err := note.Open(signed, p.Verifiers())
	if err != nil {
		var invalid *note.InvalidSignatureError
		var unverified *note.UnverifiedNoteError
		switch {
		case errors.As(err, &invalid):
			return Checkpoint{}, nil, fmt.Errorf("%w by %s", ErrBadSignature, p.whose(invalid.Name, invalid.Hash))
		case errors.As(err, &unverified):
			// No key of the policy signed: the quorum check below says so.
		default:
			return Checkpoint{}, nil, fmt.Errorf("checkpoint: open note: %w", err)
		}
	} else {
		verified = n.Sigs
	}

	var signers []Signer
	ok := map[*policyWitness]bool{}
	logSigned := false
	for _, s := range verified {
		if l := p.logKey(s); l != nil {
			logSigned = true
			signers = append(signers, Signer{Role: RoleLog, Label: "log", KeyName: s.Name, KeyHash: s.Hash})
			continue
		}
		w := p.witnessKey(s)
		if w == nil {
			continue // cannot happen: note.Open verified it with one of our keys
		}
		t, err := CosignatureTime(s)
		if err != nil {
			return Checkpoint{}, nil, err
		}
		ok[w] = true
		signers = append(signers, Signer{Role: RoleWitness, Label: w.name, KeyName: s.Name, KeyHash: s.Hash, Time: t})
	}
	ignored := p.ignored(sigs, verified)
	if len(p.logs) > 0 && !logSigned {
		return Checkpoint{}, nil, fmt.Errorf("%w: the policy requires a signature by log key %s%s", ErrLogSignature, p.logs[0].v.Name(), ignored)
	}
	if !p.quorum.satisfied(ok) {
		var why string
		if g, isGroup := p.quorum.(*group); isGroup {
			why = g.explain(ok)
		} else {
			why = "have 0 of 1 needed cosignatures: " + p.quorum.explain(ok)
		}
		return Checkpoint{}, nil, fmt.Errorf("%w: %s%s", ErrQuorum, why, ignored)
	}
	return c, signers, nil
}

func (p *Policy) logKey(s note.Signature) *policyLog {
	for _, l := range p.logs {
		if l.v.Name() == s.Name && l.v.KeyHash() == s.Hash {
			return l
		}
	}
	return nil
}

func (p *Policy) witnessKey(s note.Signature) *policyWitness {
	for _, w := range p.witnesses {
		if w.v.Name() == s.Name && w.v.KeyHash() == s.Hash {
			return w
		}
	}
	return nil
}

func (p *Policy) whose(name string, hash uint32) string {
	s := note.Signature{Name: name, Hash: hash}
	if p.logKey(s) != nil {
		return fmt.Sprintf("log key %s (key id %08x)", name, hash)
	}
	if w := p.witnessKey(s); w != nil {
		return fmt.Sprintf("witness %s (key %s, key id %08x)", w.name, name, hash)
	}
	return fmt.Sprintf("%s (key id %08x)", name, hash)
}

// ignored lists the signature lines that are not by a key of the policy,
// as a suffix for error messages.
func (p *Policy) ignored(all, verified []note.Signature) string {
	var out []string
	for _, s := range all {
		known := false
		for _, v := range verified {
			if v.Name == s.Name && v.Hash == s.Hash {
				known = true
				break
			}
		}
		if known {
			continue
		}
		out = append(out, fmt.Sprintf("%s (key id %08x)", s.Name, s.Hash))
	}
	if len(out) == 0 {
		return ""
	}
	return "; ignored signatures by keys not in the policy: " + strings.Join(out, ", ")
}
