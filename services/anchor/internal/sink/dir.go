// Package sink holds the write-once stores anchored checkpoints go to.
//
// Only the local directory sink exists so far, and it only proves that its
// directory is usable; writing checkpoints to it (and the S3 Object Lock
// sink) arrive with issue 8.
package sink

import (
	"errors"
	"fmt"
	"os"
)

// Dir is a sink in a local directory, for development stacks.
type Dir struct {
	path string
}

// OpenDir creates path if needed and checks that this process can write in
// it.
func OpenDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, fmt.Errorf("--sink-dir %s cannot be created: %w; choose a directory this user may create or write", path, err)
	}
	d := &Dir{path: path}
	if err := d.Check(); err != nil {
		return nil, err
	}
	return d, nil
}

// Path is the directory of the sink.
func (d *Dir) Path() string { return d.path }

// Check proves the directory is still writable by creating and removing a
// probe file.
func (d *Dir) Check() error {
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
