package cpuuse

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestChildCPUIsCounted(t *testing.T) {
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	root := Root{Group: "test", PID: os.Getpid()}
	a := Take(root)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Sample while the child runs: it is then counted under its own name.
	time.Sleep(300 * time.Millisecond)
	b := Take(root)
	_ = cmd.Wait()
	u := Since(a, b)
	var sh float64
	for _, x := range u.Uses {
		if x.Group == "test" && x.Name == "sh" {
			sh = x.Percent
		}
	}
	if sh <= 0 || u.Group("test") < sh {
		t.Fatalf("the busy child is not counted: %+v", u)
	}
	if s := u.String(); !strings.HasPrefix(s, "test: ") || !strings.Contains(s, "sh ") || !strings.Contains(s, "other processes") {
		t.Fatalf("String = %q", s)
	}
	// Once reaped, its time counts for the parent.
	c := Take(root)
	if Since(a, c).Group("test") <= 0 {
		t.Fatalf("reaped child's time is lost: %+v", Since(a, c))
	}
}

func TestSettle(t *testing.T) {
	// Nothing is ever below 0 % busy: Settle gives up after maxWait.
	busy, waited := Settle(t.Context(), 0, 3*time.Second)
	if waited < 3*time.Second || waited > 10*time.Second || busy < 0 || busy > 1.01 {
		t.Errorf("Settle(0, 3s) = %.2f after %s, want a fraction after two windows", busy, waited)
	}
	// Everything is below 101 %: one window.
	if _, waited := Settle(t.Context(), 1.01, time.Minute); waited > 5*time.Second {
		t.Errorf("Settle(1.01) waited %s, want one window", waited)
	}
}
