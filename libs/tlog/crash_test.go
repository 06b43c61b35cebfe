package tlog

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// crashChildEnv names the DB file a child process of TestKill9 appends to.
const crashChildEnv = "TLOG_TEST_CRASH_CHILD_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		if err := crashChild(path); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	code := m.Run()
	cleanupBenchTrees()
	os.Exit(code)
}

// crashBatch is the size of the batch a log of size leaves appends next:
// a function of the size alone, so the parent knows every batch boundary.
func crashBatch(size uint64) int {
	return 1 + int(size*2654435761%1500)
}

// crashChild appends batches to log "t" of the DB at path until it is
// killed. It prints "commit" when a batch's transaction has its tiles
// written and is about to commit, and the size after each batch that
// AppendBatch returned.
func crashChild(path string) error {
	db, err := OpenDB(path)
	if err != nil {
		return err
	}
	l, err := db.Log("t")
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	l.store.(*boltStore).failCommit = func() error {
		fmt.Fprintln(w, "commit")
		return w.Flush()
	}
	for {
		size := l.Size()
		if err := l.AppendBatch(leavesFrom(int(size), crashBatch(size))); err != nil {
			return err
		}
		fmt.Fprintln(w, l.Size())
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// TestKill9 runs this test binary as a child that appends batches in a
// loop and kills it with SIGKILL: in some rounds just after a batch
// returned (the child is then hashing the next one), in others while a
// batch's transaction commits. The reopened log must be exactly at a batch
// the child committed: the last one it reported or the one after
// (committed, not yet reported); consistent, equal to an in-memory log of
// the same leaves, and with every proof verifying. The rounds kill the
// same file again and again.
func TestKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	rng := rand.New(rand.NewPCG(7, 8))
	ml := New()
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := range rounds {
		inCommit := round%2 == 1
		reported := ml.Size()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		killAfter := 1 + rng.IntN(40)
		for batches := 0; sc.Scan(); {
			if sc.Text() == "commit" {
				if inCommit && batches == killAfter {
					if err := cmd.Process.Kill(); err != nil {
						t.Fatal(err)
					}
				}
				continue
			}
			if reported, err = strconv.ParseUint(sc.Text(), 10, 64); err != nil {
				t.Fatalf("child printed %q", sc.Text())
			}
			batches++
			if !inCommit && batches == killAfter {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Every size the child printed before dying has been read.
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL", round, err)
		}

		db, err := OpenDB(path)
		if err != nil {
			t.Fatal(err)
		}
		l, err := db.Log("t")
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		size := l.Size()
		if next := reported + uint64(crashBatch(reported)); size != reported && size != next {
			t.Fatalf("round %d: reopened size %d, want the last reported batch end %d or the next one %d", round, size, reported, next)
		}
		t.Logf("round %d (kill during commit: %v): killed after %d reported leaves, reopened at %d", round, inCommit, reported, size)
		if err := ml.AppendBatch(leavesFrom(int(ml.Size()), int(size-ml.Size()))); err != nil {
			t.Fatal(err)
		}
		sameLog(t, l, ml, rng, 200)
		if err := l.Verify(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
