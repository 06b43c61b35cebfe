package sink

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Dir is a sink in a local directory, the default of development stacks.
// Each object is a file created exclusively (O_EXCL), written, synced with
// its directory, and made read-only (0444); Put never replaces a file.
// This keeps honest mistakes from overwriting an anchor, nothing more: a
// root user on the host can still remove or change the files.
type Dir struct {
	path string
}

var _ Sink = (*Dir)(nil)

// OpenDir creates path if needed and checks that this process can write in
// it.
func OpenDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, fmt.Errorf("--sink-dir %s cannot be created: %w; choose a directory this user may create or write", path, err)
	}
	d := &Dir{path: path}
	if err := d.Check(context.Background()); err != nil {
		return nil, err
	}
	return d, nil
}

// Kind is KindDir.
func (d *Dir) Kind() string { return KindDir }

// Path is the directory of the sink.
func (d *Dir) Path() string { return d.path }

// file maps a key to its file, refusing keys that would leave the
// directory or name it.
func (d *Dir) file(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, ".") || strings.ContainsAny(key, `/\`) || !fs.ValidPath(key) {
		return "", fmt.Errorf("dir sink: key %q must be one plain file name", key)
	}
	return filepath.Join(d.path, key), nil
}

// Put writes body to a new file named key.
func (d *Dir) Put(_ context.Context, key string, body []byte) (Receipt, error) {
	name, err := d.file(key)
	if err != nil {
		return Receipt{}, err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return Receipt{}, fmt.Errorf("dir sink: %s: %w; anchored files are never replaced", name, ErrExists)
	}
	if err != nil {
		return Receipt{}, fmt.Errorf("dir sink: create %s: %w", name, err)
	}
	_, werr := f.Write(body)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(name, 0o444)
	}
	if werr == nil {
		werr = syncDir(d.path)
	}
	if werr != nil {
		// A partial file must not pass for an anchor; it was never
		// reported, so removing it hides nothing.
		_ = os.Chmod(name, 0o600)
		_ = os.Remove(name)
		return Receipt{}, fmt.Errorf("dir sink: write %s: %w", name, werr)
	}
	// Read back what the disk holds: the receipt's checksum is of the
	// stored bytes, not of the buffer.
	stored, err := os.ReadFile(name)
	if err != nil {
		return Receipt{}, fmt.Errorf("dir sink: read back %s: %w", name, err)
	}
	return Receipt{Kind: KindDir, Bucket: d.path, Key: key, SHA256: sha256.Sum256(stored), Size: int64(len(stored))}, nil
}

func syncDir(path string) error {
	dir, err := os.Open(path)
	if err != nil {
		return err
	}
	err = dir.Sync()
	if cerr := dir.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get reads the file named key; versionID must be empty.
func (d *Dir) Get(_ context.Context, key, versionID string) ([]byte, error) {
	name, err := d.file(key)
	if err != nil {
		return nil, err
	}
	if versionID != "" {
		return nil, fmt.Errorf("dir sink: %s: a directory keeps no versions (version %q asked)", name, versionID)
	}
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dir sink: %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dir sink: %w", err)
	}
	return b, nil
}

// List returns the names of the files in the directory, probe files
// excepted.
func (d *Dir) List(context.Context) ([]string, error) {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return nil, fmt.Errorf("dir sink: %w", err)
	}
	var keys []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			keys = append(keys, e.Name())
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Check proves the directory is still writable by creating and removing a
// probe file.
func (d *Dir) Check(context.Context) error {
	f, err := os.CreateTemp(d.path, ".probe-*")
	if err != nil {
		return fmt.Errorf("--sink-dir %s is not writable: %w; give this user write access or choose another directory", d.path, unwrapPath(err))
	}
	name := f.Name()
	cerr := f.Close()
	rerr := os.Remove(name)
	if cerr != nil {
		return fmt.Errorf("--sink-dir %s: %w", d.path, cerr)
	}
	if rerr != nil {
		return fmt.Errorf("--sink-dir %s: remove probe file: %w", d.path, rerr)
	}
	return nil
}

// unwrapPath drops the operation and path of a *os.PathError: the path is
// a random probe name, and the caller names the directory.
func unwrapPath(err error) error {
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
