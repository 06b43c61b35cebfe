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
