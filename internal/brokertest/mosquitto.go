// Package brokertest starts real Mosquitto brokers for tests: one child process per call, on
// a free loopback port, with its own configuration and persistence directory, stopped by the
// test's cleanup. It never touches a broker it did not start and never binds port 1883.
package brokertest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds how long one start waits for the listener to accept.
	readyTimeout = 10 * time.Second
	// stopTimeout is how long Stop waits after SIGTERM before it sends SIGKILL. Mosquitto
	// writes its persistence file on the way out, so this is not instant.
	stopTimeout = 5 * time.Second
	// bindAttempts is how many fresh ports StartMosquitto tries when another process takes the
	// port between our probe and the broker's bind.
	bindAttempts = 5
	// maxLog caps the captured broker output; older output is dropped first.
	maxLog = 4 << 20
)

// Config describes one test broker. The zero value is a non-persistent broker with Mosquitto's
// default window of 20 on a free port.
type Config struct {
	// MaxInflight is max_inflight_messages, which Mosquitto also grants to MQTT 5 clients as
	// the Receive Maximum in CONNACK. 0 means 20 (Mosquitto's default); a negative value
	// writes 0, which Mosquitto reads as "no limit".
	MaxInflight int
	// Persistence turns on persistence with the database file in Dir, saved every second and
	// when the broker stops by SIGTERM. Needed for Restart to keep sessions.
	Persistence bool
	// Dir holds the configuration and persistence files. "" means a fresh t.TempDir(); pass
	// the Dir of an earlier broker to start a new one on its persistence file.
	Dir string
	// Port is the loopback TCP port. 0 picks a free one.
	Port int
	// Extra lines are appended to the configuration, e.g. "max_packet_size 1000",
	// "retain_available false" or "max_qos 1". An extra line replaces every default line
	// that sets the same option, so "max_queued_messages 100" overrides the default instead
	// of following it. The exceptions are listener, log_dest and log_type, which add to the
	// defaults: the broker always logs at least errors to information to stderr.
	Extra []string
}

// Mosquitto is one broker started by StartMosquitto. Its methods are safe for concurrent use.
type Mosquitto struct {
	Addr string // "127.0.0.1:port"
	URL  string // "mqtt://127.0.0.1:port"
	Port int
	Dir  string

	bin  string
	conf string // path of the configuration file
	cfg  Config
	log  logBuffer

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of the broker binary. done is closed once the process has been reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status, valid after done
}

// StartMosquitto starts a broker configured by cfg and waits until it accepts TCP connections.
// It fails the test (with the broker's output) if the broker cannot start within about ten
// seconds, and skips it when Mosquitto is not installed (see Require). The broker is stopped
// by t.Cleanup.
func StartMosquitto(t testing.TB, cfg Config) *Mosquitto {
	t.Helper()
	bin := Require(t)
	dir := cfg.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	m := &Mosquitto{Dir: dir, bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), cfg: cfg}
	t.Cleanup(m.Stop)

	port := cfg.Port
	if port != 0 {
		if err := m.launch(port); err != nil {
			t.Fatalf("brokertest: start mosquitto on port %d: %v\n%s", port, err, m.Log())
		}
	} else {
		var err error
		for range bindAttempts {
			if port, err = freePort(); err != nil {
				t.Fatalf("brokertest: pick a port: %v", err)
			}
			if err = m.launch(port); !errors.Is(err, errAddrInUse) {
				break
			}
		}
		if err != nil {
			t.Fatalf("brokertest: start mosquitto: %v\n%s", err, m.Log())
		}
	}
	// Set once here and never again: Restart reuses the port, so readers need no lock.
	m.Port = port
	m.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	m.URL = "mqtt://" + m.Addr
	return m
}

// Stop stops the broker with SIGTERM, so that it saves its persistence file, and waits for it
// to exit; after five seconds it sends SIGKILL. Stopping a stopped broker does nothing.
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.detachLocked()
	if p == nil {
		return
	}
	// SIGTERM again every second: once, under load, a broker was seen ignoring the first
	// for 5 s (never understood; a second signal costs nothing).
	deadline := time.After(stopTimeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		case <-deadline:
			m.log.note("brokertest: no exit %v after SIGTERM; sending SIGKILL", stopTimeout)
			_ = p.cmd.Process.Kill()
			<-p.done
			return
		}
	}
}

// Kill stops the broker with SIGKILL, as a crash would: it saves nothing on the way out, so
// a later Restart sees only what the last autosave wrote. Killing a stopped broker does nothing.
func (m *Mosquitto) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.detachLocked()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// detachLocked returns the running broker process, no longer m's, or nil if none runs.
// m.mu is held.
func (m *Mosquitto) detachLocked() *process {
	p := m.proc
	m.proc = nil
	return p
}

// Restart stops the broker (if it is running) and starts it again with the same
// configuration, port and persistence file, then waits until it accepts connections. It
// fails t if the broker does not come back.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.Stop()
	var err error
	// The port is fixed now, so a failed bind can only be retried on the same port; another
	// process holding it briefly is the one case worth a second try.
	for i := range bindAttempts {
		if err = m.launch(m.Port); !errors.Is(err, errAddrInUse) {
			break
		}
		time.Sleep(time.Duration(i+1) * 50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("brokertest: restart mosquitto on port %d: %v\n%s", m.Port, err, m.Log())
	}
}

// Log returns everything the broker has written to stdout and stderr so far, across
// restarts, for diagnostics. At most the last 4 MiB are kept.
func (m *Mosquitto) Log() string { return m.log.String() }

// Pid returns the running broker's process ID, or 0 when stopped.
func (m *Mosquitto) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.cmd.Process.Pid
}

// errAddrInUse reports that the broker exited because its port was taken.
var errAddrInUse = errors.New("address already in use")

// launch writes the configuration for port, starts the broker and waits until it accepts.
// On failure no process is left running.
func (m *Mosquitto) launch(port int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		return errors.New("already running")
	}
	if err := os.WriteFile(m.conf, []byte(configText(m.cfg, port, m.Dir)), 0o600); err != nil {
		return err
	}
	m.log.note("brokertest: starting %s -c %s (port %d)", m.bin, m.conf, port)
	mark := m.log.Len()
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Dir = m.Dir
	cmd.Stdout = &m.log
	cmd.Stderr = &m.log
	cmd.SysProcAttr = sysProcAttr()
	// Should the broker leave a child holding its output pipes, Wait still returns.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitReady(p, &m.log, mark, addr); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		if strings.Contains(m.log.Since(mark), "Address already in use") {
			return errAddrInUse
		}
		return err
	}
	m.proc = p
	return nil
}

// waitReady waits until the broker has said in its log that it is running, which it does
// only after binding its listener, and then checks that addr accepts. A successful dial alone
// proves nothing: until the broker gives up on a taken port, the port's owner answers.
func waitReady(p *process, log *logBuffer, mark int, addr string) error {
	deadline := time.Now().Add(readyTimeout)
	pause := 2 * time.Millisecond
	for !runningLine(log.Since(mark)) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no \"running\" line in the log after %v", readyTimeout)
		}
		select {
		case <-p.done:
			return fmt.Errorf("mosquitto exited during startup: %v", p.err)
		case <-time.After(pause):
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

// runningLine reports whether log holds Mosquitto's "mosquitto version X running" line.
func runningLine(log string) bool {
	for line := range strings.Lines(log) {
		if strings.Contains(line, "mosquitto version ") && strings.HasSuffix(strings.TrimSpace(line), " running") {
			return true
		}
	}
	return false
}

// configText renders the broker configuration. Each log_type sits on its own line:
// Mosquitto reads one value per log_type line and silently ignores the rest of the line.
func configText(cfg Config, port int, dir string) string {
	inflight := cfg.MaxInflight
	switch {
	case inflight == 0:
		inflight = 20
	case inflight < 0:
		inflight = 0
	}
	lines := []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"allow_anonymous true",
		// 0 is "no maximum" for max_queued_messages (mosquitto.conf(5)); the default of
		// 1000 would silently drop messages queued for an offline session.
		"max_queued_messages 0",
		fmt.Sprintf("max_inflight_messages %d", inflight),
		// Nagle's algorithm stalls a subscriber that batches its acks.
		"set_tcp_nodelay true",
		"persistence " + strconv.FormatBool(cfg.Persistence),
	}
	if cfg.Persistence {
		// The location is joined to the file name without a separator, hence the slash.
		lines = append(lines, "persistence_location "+dir+string(filepath.Separator), "autosave_interval 1")
	}
	lines = append(lines,
		// Not stdout: into a pipe Mosquitto's stdout is block-buffered and shows nothing
		// until exit, while stderr reaches us line by line.
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
	)
	if os.Geteuid() == 0 {
		// As root Mosquitto switches to the "mosquitto" user, which cannot write the
		// persistence file into a test's private directory; stay root instead.
		lines = append(lines, "user root")
	}

	overridden := make(map[string]bool)
	for _, l := range cfg.Extra {
		if k := optionName(l); k != "" && !additive[k] {
			overridden[k] = true
		}
	}
	var b strings.Builder
	b.WriteString("# Written by brokertest for one test broker.\n")
	for _, l := range lines {
		if !overridden[optionName(l)] {
			b.WriteString(l + "\n")
		}
	}
	for _, l := range cfg.Extra {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// additive options may appear many times and each line adds to the others, so extra lines
// for them never replace the defaults. Readiness detection relies on the default log lines.
var additive = map[string]bool{"listener": true, "log_dest": true, "log_type": true}

func optionName(line string) string {
	f := strings.Fields(line)
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return ""
	}
	return f[0]
}

// freePort asks the kernel for a free loopback port. The port is free only until someone else
// takes it; StartMosquitto retries with a new one if the broker cannot bind it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Find returns the path of the mosquitto binary, or "" when there is none.
func Find() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Start starts a broker outside a test, for a TestMain that shares one broker (Example
// functions need one). cfg.Dir must be set; the caller must call Stop.
func Start(cfg Config) (*Mosquitto, error) {
	bin := Find()
	if bin == "" {
		return nil, errors.New("brokertest: mosquitto not found; install it with apt-get install -y mosquitto")
	}
	if cfg.Dir == "" {
		return nil, errors.New("brokertest: Start needs cfg.Dir")
	}
	m := &Mosquitto{Dir: cfg.Dir, bin: bin, conf: filepath.Join(cfg.Dir, "mosquitto.conf"), cfg: cfg}
	var err error
	var port int
	for range bindAttempts {
		if port, err = freePort(); err != nil {
			return nil, err
		}
		if err = m.launch(port); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("brokertest: start mosquitto: %w\n%s", err, m.Log())
	}
	m.Port = port
	m.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	m.URL = "mqtt://" + m.Addr
	return m, nil
}

// Require returns the path of the mosquitto binary: the one on PATH, else /usr/sbin/mosquitto.
// When there is none it fails t if the environment variable CI is "true", and otherwise
// skips t with a message saying how to install it.
func Require(t testing.TB) string {
	t.Helper()
	if p := Find(); p != "" {
		return p
	}
	const msg = "\n" +
		"************************************************************************\n" +
		"* MOSQUITTO NOT FOUND: this test needs a real Mosquitto 2.x broker.    *\n" +
		"* Install it with:  apt-get update && apt-get install -y mosquitto     *\n" +
		"* (it is looked for on PATH, then at /usr/sbin/mosquitto).             *\n" +
		"************************************************************************"
	if strings.EqualFold(os.Getenv("CI"), "true") {
		t.Fatal("brokertest: CI=true and" + msg)
	}
	NoteSkip(t.Name())
	t.Skip("brokertest: SKIPPING" + msg)
	return ""
}

// NoteSkip records that test name was skipped for want of a broker, by appending a line to
// the file named by TERN_SKIP_LOG when it is set; test.sh reads it to print one summary at
// the end of a run.
func NoteSkip(name string) {
	path := os.Getenv("TERN_SKIP_LOG")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(name + ": no mosquitto\n")
}

// logBuffer collects the broker's output. exec copies both pipes into it from its own
// goroutines, so every access is locked. When it grows past maxLog the oldest half goes.
type logBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	dropped int
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	if over := l.b.Len() - maxLog; over > 0 {
		n := over + maxLog/2
		l.b.Next(n)
		l.dropped += n
	}
	return len(p), nil
}

// note writes a line of our own into the log so restarts and kills show up in it.
func (l *logBuffer) note(format string, args ...any) {
	fmt.Fprintf(l, format+"\n", args...)
}

// Len returns the total number of bytes ever written, a mark for Since.
func (l *logBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped + l.b.Len()
}

// Since returns what was written after mark, or as much of it as is still kept.
func (l *logBuffer) Since(mark int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	skip := max(mark-l.dropped, 0)
	return string(l.b.Bytes()[skip:])
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped > 0 {
		return fmt.Sprintf("[%d earlier bytes dropped]\n%s", l.dropped, l.b.String())
	}
	return l.b.String()
}
