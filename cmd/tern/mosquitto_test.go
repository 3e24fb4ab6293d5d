package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// startMosquitto starts a Mosquitto of the test's own on a free loopback port with extra
// config lines, and returns its mqtt:// URL. It is stopped by its PID at cleanup. Without
// the mosquitto binary the test is skipped, unless CI is set: then it fails (brokertest.Require).
func startMosquitto(t *testing.T, extra ...string) string {
	t.Helper()
	bin := brokertest.Require(t) // skips, or fails under CI=true, without a broker
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "mosquitto.conf")
		lines := append([]string{
			fmt.Sprintf("listener %d 127.0.0.1", port),
			"allow_anonymous true",
			"max_queued_messages 0",
		}, extra...)
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-c", conf)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if waitListening(addr, exited, 10*time.Second) {
			return "mqtt://" + addr
		}
		if attempt == 2 {
			t.Fatalf("mosquitto did not start: %s", out.String())
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening waits until addr accepts a connection; false if the process exited or the
// limit passed.
func waitListening(addr string, exited <-chan struct{}, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers, which can wait
// until its content contains a string.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the content contains want, up to limit.
func (s *syncBuffer) waitFor(t *testing.T, want string, limit time.Duration) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), want) {
			s.mu.Unlock()
			return
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no %q within %v in:\n%s", want, limit, s.String())
		}
	}
}
