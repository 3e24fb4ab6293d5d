package suite

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one child process seen from the parent.
type proc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	events  chan Event
	stderr  lockedBuffer
	exited  chan struct{}
	waitErr error // the child's exit status (cmd.Wait), set before exited closes

	// brokerPid is the Mosquitto the child works with (0: none, or mochi in the suite's own
	// process); its CPU time is read at "go" (brokerAtGo) and at "stop".
	brokerPid  int
	brokerAtGo int64 // -1: not read
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// errUnavailable marks a job the library cannot run: the row is skipped.
var errUnavailable = errors.New("unavailable")

// ChildFlag is the flag that makes the suite binary run one job as a child.
const ChildFlag = "child"

// startProc starts the suite binary again as a child running job.
func startProc(job Job) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-"+ChildFlag, string(spec))
	// The child dies with the suite, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{cmd: cmd, events: make(chan Event, 8), exited: make(chan struct{}), brokerAtGo: -1}
	cmd.Stderr = &p.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var e Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				fmt.Fprintf(&p.stderr, "suite: bad line from child: %q\n", sc.Text())
				continue
			}
			p.events <- e
		}
		close(p.events)
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// say sends one line to the child.
func (p *proc) say(word string) {
	if word == "go" && p.brokerPid != 0 {
		p.brokerAtGo = processCPU(p.brokerPid) // a broker that has not run yet has used 0
	}
	io.WriteString(p.stdin, word+"\n")
}

// await waits for the named event.
func (p *proc) await(name string, timeout time.Duration) (Event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case e, ok := <-p.events:
			if !ok {
				return Event{}, fmt.Errorf("child exited before %q: %s", name, p.stderr.String())
			}
			if e.Event == name {
				return e, nil
			}
			if e.Event == "result" && e.Result != nil && e.Result.Err != "" {
				if e.Result.Unavailable {
					return e, fmt.Errorf("%w: %s", errUnavailable, e.Result.Err)
				}
				return e, fmt.Errorf("child failed before %q: %s", name, e.Result.Err)
			}
		case <-t.C:
			return Event{}, fmt.Errorf("no %q from the child within %v", name, timeout)
		}
	}
}

// expect waits for the named event like await and kills the child when it does not come.
func (p *proc) expect(name string, timeout time.Duration) error {
	if _, err := p.await(name, timeout); err != nil {
		p.kill()
		return err
	}
	return nil
}

// finish asks for the result and waits for the child to exit; on timeout it kills it.
func (p *proc) finish(timeout time.Duration) (*ChildResult, error) {
	var brokerNs int64
	if p.brokerPid != 0 && p.brokerAtGo >= 0 {
		if now := processCPU(p.brokerPid); now >= 0 {
			brokerNs = now - p.brokerAtGo
		}
	}
	p.say("stop")
	e, err := p.await("result", timeout)
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		if err == nil {
			err = errors.New("child did not exit within 5 s of its result")
		}
	}
	if err != nil {
		return nil, err
	}
	if e.Result == nil {
		return nil, fmt.Errorf("child sent no result")
	}
	if p.waitErr != nil {
		// A result and then a failed exit: the race detector's report at exit, say.
		return nil, fmt.Errorf("child exited with %v after its result: %s", p.waitErr, p.stderr.String())
	}
	e.Result.BrokerNs = brokerNs
	return e.Result, nil
}

// processCPU returns the user and system time another process has used, in nanoseconds,
// from /proc/PID/stat (clock ticks of 10 ms); -1 where that cannot be read.
func processCPU(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from its end.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return -1
	}
	return (utime + stime) * int64(time.Second/100)
}

// kill ends the child at once.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	p.stdin.Close()
	<-p.exited
}
