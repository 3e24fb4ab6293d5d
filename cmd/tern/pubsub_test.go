package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/cmd/tern/internal/broker"
)

// runTern runs "tern args..." in process with in as standard input.
func runTern(t *testing.T, in string, args ...string) (int, string, string) {
	t.Helper()
	stdin = strings.NewReader(in)
	defer func() { stdin = os.Stdin }()
	var stdout, stderr bytes.Buffer
	st := dispatch(args, &stdout, &stderr)
	return st, stdout.String(), stderr.String()
}

// ternSub is "tern sub" running in process.
type ternSub struct {
	stdout, stderr *syncBuffer
	done           chan int
}

// startTernSub starts "tern sub -d args..." and returns once it has subscribed.
func startTernSub(t *testing.T, args ...string) *ternSub {
	t.Helper()
	s := &ternSub{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan int, 1)}
	go func() { s.done <- dispatch(append([]string{"sub", "-d"}, args...), s.stdout, s.stderr) }()
	s.stderr.waitFor(t, "subscribed to", 10*time.Second)
	return s
}

// wait returns the exit status, failing after limit.
func (s *ternSub) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case st := <-s.done:
		return st
	case <-time.After(limit):
		t.Fatalf("tern sub did not end within %v; stderr:\n%s", limit, s.stderr.String())
		return -1
	}
}

// mosqSub is a mosquitto_sub child process.
type mosqSub struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	exited chan struct{}
}

// startMosqSub starts "mosquitto_sub -V mqttv5 -d args..." and returns once its SUBACK
// arrived. Tests using it skip without mosquitto-clients, as startMosquitto does.
func startMosqSub(t *testing.T, url string, args ...string) *mosqSub {
	t.Helper()
	port := url[strings.LastIndex(url, ":")+1:]
	// stdbuf: mosquitto_sub's stdout is block-buffered on a pipe; the test reads it live.
	all := append([]string{"-oL", "mosquitto_sub", "-V", "mqttv5", "-d", "-h", "127.0.0.1", "-p", port}, args...)
	s := &mosqSub{cmd: exec.Command("stdbuf", all...), stdout: &syncBuffer{}, exited: make(chan struct{})}
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() { s.cmd.Process.Kill(); <-s.exited })
	s.stdout.waitFor(t, "received SUBACK", 10*time.Second)
	return s
}

// lines waits for the process to end and returns its output without debug lines.
func (s *mosqSub) lines(t *testing.T, limit time.Duration) []string {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(limit):
		t.Fatalf("mosquitto_sub did not end within %v:\n%s", limit, s.stdout.String())
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(s.stdout.String(), "\n"), "\n") {
		if !strings.HasPrefix(l, "Client ") && !strings.HasPrefix(l, "Subscribed (mid") {
			out = append(out, l)
		}
	}
	return out
}

// propsFormat prints every property both tools show the same way (%E, the remaining
// expiry, may tick down by a second; %m and %S are each side's own numbering).
const propsFormat = `%t|%q|%r|%C|%R|%F|%P|%D|%l|%x`

// tern pub to mosquitto_sub: QoS 0/1/2, retained, every property, user properties repeated
// and in order, UTF-8, binary files, stdin lines; byte-exact.
func TestPubToMosquittoSub(t *testing.T) {
	url := startMosquitto(t)
	bin := filepath.Join(t.TempDir(), "bin")
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', 'x'}
	if err := os.WriteFile(bin, binary, 0o600); err != nil {
		t.Fatal(err)
	}
	props := []string{"--content-type", "text/plain; charset=utf-8", "--response-topic", "réponse/t",
		"--correlation-data", "id-7", "--payload-format", "1", "--expiry", "3600",
		"--user-property", "k=v1", "--user-property", "ü=ñ", "--user-property", "k=v2"}
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  []string
	}{
		{"qos0", "", append([]string{"-q", "0", "-m", "héllo"}, props...),
			[]string{"cli/t|0|0|text/plain; charset=utf-8|réponse/t|1|k:v1 ü:ñ k:v2|id-7|6|68c3a96c6c6f"}},
		{"qos1", "", append([]string{"-q", "1", "-m", "héllo"}, props...),
			[]string{"cli/t|1|0|text/plain; charset=utf-8|réponse/t|1|k:v1 ü:ñ k:v2|id-7|6|68c3a96c6c6f"}},
		{"qos2", "", append([]string{"-q", "2", "-m", "héllo"}, props...),
			[]string{"cli/t|2|0|text/plain; charset=utf-8|réponse/t|1|k:v1 ü:ñ k:v2|id-7|6|68c3a96c6c6f"}},
		{"binary-file", "", []string{"-q", "1", "-f", bin},
			[]string{"cli/t|1|0||||||7|000102fffe0a78"}},
		{"stdin-lines", "one\ntwo\r\n\nthree", []string{"-q", "2", "-l"},
			[]string{"cli/t|2|0||||||3|6f6e65", "cli/t|2|0||||||3|74776f", "cli/t|2|0||||||0|", "cli/t|2|0||||||5|7468726565"}},
		{"stdin-file", "a\nb\n", []string{"-q", "1", "-s"},
			[]string{"cli/t|1|0||||||4|610a620a"}},
		{"repeat", "", []string{"-q", "1", "-m", "r", "--repeat", "3"},
			[]string{"cli/t|1|0||||||1|72", "cli/t|1|0||||||1|72", "cli/t|1|0||||||1|72"}},
		{"null", "", []string{"-q", "1", "-n"}, []string{"cli/t|1|0||||||0|"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := startMosqSub(t, url, "-q", "2", "-t", "cli/t", "-C", fmt.Sprint(len(tc.want)), "-F", propsFormat)
			st, _, stderr := runTern(t, tc.stdin, append([]string{"pub", "-L", url, "-t", "cli/t"}, tc.args...)...)
			if st != 0 {
				t.Fatalf("tern pub: status %d: %s", st, stderr)
			}
			if got := ms.lines(t, 10*time.Second); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("mosquitto_sub got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	t.Run("retained", func(t *testing.T) {
		if st, _, stderr := runTern(t, "", "pub", "-L", url, "-t", "cli/keep", "-r", "-q", "1", "-m", "kept"); st != 0 {
			t.Fatalf("status %d: %s", st, stderr)
		}
		ms := startMosqSub(t, url, "-t", "cli/keep", "-C", "1", "-F", "%t|%r|%p")
		if got := ms.lines(t, 10*time.Second); len(got) != 1 || got[0] != "cli/keep|1|kept" {
			t.Fatalf("got %q", got)
		}
	})
}

// mosquitto_pub to tern sub --json: every property, binary payload as base64, repeated
// user properties in order, QoS as granted.
func TestMosquittoPubToSubJSON(t *testing.T) {
	url := startMosquitto(t)
	port := url[strings.LastIndex(url, ":")+1:]
	bin := filepath.Join(t.TempDir(), "bin")
	binary := []byte{0xff, 0, 'a', 0x80}
	if err := os.WriteFile(bin, binary, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, qos := range []string{"0", "1", "2"} {
		t.Run("qos"+qos, func(t *testing.T) {
			s := startTernSub(t, "-L", url, "-t", "j/#", "-q", "2", "-C", "2", "--json")
			pub := func(args ...string) {
				t.Helper()
				all := append([]string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", port, "-q", qos}, args...)
				if out, err := exec.Command("mosquitto_pub", all...).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub: %v: %s", err, out)
				}
			}
			pub("-t", "j/text", "-m", "grüß", "-D", "publish", "content-type", "text/x",
				"-D", "publish", "response-topic", "re/t", "-D", "publish", "correlation-data", "c1",
				"-D", "publish", "payload-format-indicator", "1", "-D", "publish", "message-expiry-interval", "500",
				"-D", "publish", "user-property", "a", "1", "-D", "publish", "user-property", "a", "2",
				"-D", "publish", "user-property", "b", "ß")
			pub("-t", "j/bin", "-f", bin)
			if st := s.wait(t, 10*time.Second); st != 0 {
				t.Fatalf("status %d: %s", st, s.stderr.String())
			}
			lines := strings.Split(strings.TrimSuffix(s.stdout.String(), "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("%d lines: %q", len(lines), s.stdout.String())
			}
			var text, bm map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &text); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(lines[1]), &bm); err != nil {
				t.Fatal(err)
			}
			q := float64(qos[0] - '0')
			exp, _ := text["message_expiry"].(float64)
			wantUP := `[{"key":"a","value":"1"},{"key":"a","value":"2"},{"key":"b","value":"ß"}]`
			gotUP, _ := json.Marshal(text["user_properties"])
			if text["topic"] != "j/text" || text["payload"] != "grüß" || text["payload_encoding"] != "utf8" ||
				text["qos"] != q || text["retain"] != false || text["content_type"] != "text/x" ||
				text["response_topic"] != "re/t" || text["correlation_data"] != "c1" ||
				text["payload_format"] != 1.0 || exp < 499 || exp > 500 || string(gotUP) != wantUP || text["time"] == nil {
				t.Errorf("text message: %s", lines[0])
			}
			if bm["topic"] != "j/bin" || bm["payload"] != base64.StdEncoding.EncodeToString(binary) ||
				bm["payload_encoding"] != "base64" || bm["qos"] != q {
				t.Errorf("binary message: %s", lines[1])
			}
		})
	}
}

// tern sub -F prints what mosquitto_sub -F prints for the same message.
func TestSubFormatMatchesMosquittoSub(t *testing.T) {
	url := startMosquitto(t)
	port := url[strings.LastIndex(url, ":")+1:]
	format := propsFormat + `|%p|%X|%S|%%|\t|@@`
	ms := startMosqSub(t, url, "-q", "1", "-t", "f/#", "-C", "2", "-F", format)
	s := startTernSub(t, "-L", url, "-q", "1", "-t", "f/#", "-C", "2", "-F", format)
	for _, args := range [][]string{
		{"-t", "f/a", "-q", "1", "-m", "ünï", "-D", "publish", "content-type", "ct", "-D", "publish", "user-property", "x", "y",
			"-D", "publish", "user-property", "x", "z", "-D", "publish", "correlation-data", "cd", "-D", "publish", "response-topic", "r",
			"-D", "publish", "payload-format-indicator", "1"},
		{"-t", "f/b", "-q", "0", "-r", "-m", "plain"},
	} {
		all := append([]string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", port}, args...)
		if out, err := exec.Command("mosquitto_pub", all...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	want := strings.Join(ms.lines(t, 10*time.Second), "\n") + "\n"
	if st := s.wait(t, 10*time.Second); st != 0 {
		t.Fatalf("status %d: %s", st, s.stderr.String())
	}
	if got := s.stdout.String(); got != want {
		t.Fatalf("tern sub -F:\n%q\nmosquitto_sub -F:\n%q", got, want)
	}
}

// -W ends the run with status 27 when it expires; -C ends it with 0 after N messages.
func TestSubCountAndTimeout(t *testing.T) {
	url := startMosquitto(t)
	st, _, stderr := runTern(t, "", "sub", "-L", url, "-t", "w/#", "-W", "1")
	if st != exitTimeout || !strings.Contains(stderr, "-W") {
		t.Fatalf("-W: status %d, stderr %q; want 27", st, stderr)
	}
	s := startTernSub(t, "-L", url, "-t", "c/#", "-q", "1", "-C", "2", "-v")
	if st, _, stderr := runTern(t, "a\nb\nc\n", "pub", "-L", url, "-t", "c/x", "-q", "1", "-l"); st != 0 {
		t.Fatalf("pub: %d %s", st, stderr)
	}
	if st := s.wait(t, 10*time.Second); st != 0 || s.stdout.String() != "c/x a\nc/x b\n" {
		t.Fatalf("-C 2: status %d, output %q", st, s.stdout.String())
	}
	// -R skips retained messages (and they do not count for -C).
	if st, _, _ := runTern(t, "", "pub", "-L", url, "-t", "r/x", "-r", "-m", "old"); st != 0 {
		t.Fatal("retained publish failed")
	}
	s = startTernSub(t, "-L", url, "-t", "r/#", "-R", "-C", "1")
	if st, _, _ := runTern(t, "", "pub", "-L", url, "-t", "r/x", "-m", "new"); st != 0 {
		t.Fatal("publish failed")
	}
	if st := s.wait(t, 10*time.Second); st != 0 || s.stdout.String() != "new\n" {
		t.Fatalf("-R: status %d, output %q", st, s.stdout.String())
	}
}

// The same round trips through the embedded broker (tern serve's), no external broker.
func TestPubSubEmbeddedBroker(t *testing.T) {
	url := startEmbedded(t)
	s := startTernSub(t, "--broker", strings.TrimPrefix(url, "mqtt://"), "-t", "e/#", "-q", "2", "-C", "3", "--json")
	if st, _, stderr := runTern(t, "x\ny\n", "pub", "-L", url, "-t", "e/l", "-q", "2", "-l", "--user-property", "k=v"); st != 0 {
		t.Fatalf("pub: %d %s", st, stderr)
	}
	if st, _, stderr := runTern(t, "", "pub", "-L", url, "-t", "e/m", "-q", "1", "-m", "z", "--content-type", "c"); st != 0 {
		t.Fatalf("pub: %d %s", st, stderr)
	}
	if st := s.wait(t, 10*time.Second); st != 0 {
		t.Fatalf("sub: %d %s", st, s.stderr.String())
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(s.stdout.String()), "\n") {
		var m struct {
			Topic          string
			Payload        string
			ContentType    string         `json:"content_type"`
			UserProperties []jsonProperty `json:"user_properties"`
		}
		json.Unmarshal([]byte(l), &m)
		got = append(got, fmt.Sprintf("%v", m))
	}
	want := []string{"{e/l x  [{k v}]}", "{e/l y  [{k v}]}", "{e/m z c []}"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Fatalf("got %q, want %q\n%s", got, want, s.stdout.String())
	}
}

// Mistakes are one line on stderr naming the flag (or the broker's reason) and the exit
// status says which kind: 2 usage, 1 runtime.
func TestCLIBadInput(t *testing.T) {
	url := startMosquitto(t)
	noAuth := startPasswordMosquitto(t, "u", "right")
	dir := t.TempDir()
	badCA := filepath.Join(dir, "ca.pem")
	os.WriteFile(badCA, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		args   []string
		status int
		msg    string
	}{
		{[]string{"pub", "--nope"}, 2, "flag provided but not defined: -nope"},
		{[]string{"pub", "-m", "x"}, 2, "-t TOPIC is required"},
		{[]string{"pub", "-t", "a/+", "-m", "x"}, 2, `-t "a/+"`},
		{[]string{"pub", "-t", "a\xffb", "-m", "x"}, 2, "-t"},
		{[]string{"pub", "-t", "a"}, 2, "no message"},
		{[]string{"pub", "-t", "a", "-m", "x", "-n"}, 2, "only one of"},
		{[]string{"pub", "-t", "a", "-f", filepath.Join(dir, "missing")}, 1, "-f: stat"},
		{[]string{"pub", "-t", "a", "-m", "x", "-q", "3"}, 2, "-q 3"},
		{[]string{"pub", "-t", "a", "-m", "x", "--user-property", "novalue"}, 2, "--user-property"},
		{[]string{"pub", "-t", "a", "-m", "x", "--cafile", filepath.Join(dir, "none.pem")}, 1, "--cafile"},
		{[]string{"pub", "-t", "a", "-m", "x", "--cafile", badCA}, 1, "--cafile " + badCA + ": no PEM certificate"},
		{[]string{"pub", "-t", "a", "-m", "x", "-L", "http://x:1"}, 2, `unknown scheme "http"`},
		{[]string{"pub", "-t", "a", "-m", "x", "-L", "nohostport"}, 2, "want a URL"},
		{[]string{"pub", "-t", "a", "-m", "x", "-V", "31"}, 2, "MQTT 3.1 (protocol level 3) is not supported"},
		{[]string{"pub", "-t", "a", "-m", "x", "-c"}, 2, "-c needs a client identifier"},
		{[]string{"pub", "-t", "a", "-m", "x", "-L", noAuth, "-u", "u", "-P", "wrong"}, 1, "connect refused: not authorized (0x87)"},
		{[]string{"sub"}, 2, "-t FILTER is required"},
		{[]string{"sub", "-t", "a/#/b"}, 2, `-t "a/#/b"`},
		{[]string{"sub", "-t", "a", "--share", "g/1"}, 2, "--share"},
		{[]string{"sub", "-t", "a", "-v", "--json"}, 2, "only one of"},
		{[]string{"sub", "-t", "a", "-F", "%k"}, 2, "unknown sequence %k"},
		{[]string{"sub", "-t", "a", "-L", url, "-x", "abc"}, 2, "-x"},
	} {
		st, stdout, stderr := runTern(t, "", tc.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if st != tc.status || !strings.Contains(stderr, tc.msg) || len(lines) != 1 || stdout != "" {
			t.Errorf("tern %q: status %d, stderr %q; want %d and one line with %q", tc.args, st, stderr, tc.status, tc.msg)
		}
	}
}

// An unreachable broker fails within the connect timeout.
func TestUnreachableBroker(t *testing.T) {
	port := freePort(t)
	st, _, stderr := runTern(t, "", "pub", "-h", "127.0.0.1", "-p", fmt.Sprint(port), "-t", "a", "-m", "x", "--connect-timeout", "2s")
	if st != 1 || !strings.Contains(stderr, "tern pub: dial mqtt://127.0.0.1:") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("status %d, stderr %q", st, stderr)
	}
}

// startEmbedded starts the embedded broker (tern serve's) on a free loopback port.
func startEmbedded(t *testing.T) string {
	t.Helper()
	b, err := broker.Start("127.0.0.1:0", broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.URL()
}

// A persistent session resumed by "tern sub -c" prints what the broker queued while the
// subscriber was away: the subscription exists before CONNACK, when the broker sends them.
func TestSubResumesPersistentSession(t *testing.T) {
	url := startMosquitto(t)
	sess := []string{"sub", "-L", url, "-c", "-i", "resume-sub", "-x", "300", "-q", "1", "-t", "p/#"}
	if st, _, stderr := runTern(t, "", append(sess, "-W", "1")...); st != exitTimeout {
		t.Fatalf("registering the session: status %d, stderr %q", st, stderr)
	}
	var in strings.Builder
	var want strings.Builder
	for i := range 300 {
		fmt.Fprintf(&in, "m%d\n", i)
		fmt.Fprintf(&want, "p/x m%d\n", i)
	}
	if st, _, stderr := runTern(t, in.String(), "pub", "-L", url, "-t", "p/x", "-q", "1", "-l"); st != 0 {
		t.Fatalf("pub: %d %s", st, stderr)
	}
	st, out, stderr := runTern(t, "", append(sess, "-v", "-C", "300", "-W", "20")...)
	if st != 0 || out != want.String() {
		t.Fatalf("resumed: status %d, %d of 300 lines, stderr %q", st, strings.Count(out, "\n"), stderr)
	}
}

// startPasswordMosquitto starts a Mosquitto that admits only user with password (a
// password_file made by mosquitto_passwd) and returns its URL.
func startPasswordMosquitto(t *testing.T, user, password string) string {
	t.Helper()
	// Mosquitto running as root drops to its own user before it reads the password file.
	pwdir, err := os.MkdirTemp("", "tern-pw-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pwdir) })
	os.Chmod(pwdir, 0o755)
	pwfile := filepath.Join(pwdir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pwfile, user, password).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	os.Chmod(pwfile, 0o644)
	return startMosquitto(t, "allow_anonymous false", "password_file "+pwfile)
}

// tern sub -F %j prints mosquitto_sub's JSON line for the same message, field for field
// (the time of receipt aside).
func TestSubJSONFormatMatchesMosquittoSub(t *testing.T) {
	got, want, _ := subFormatBoth(t, "%j", [][]string{
		{"-t", "j/a", "-q", "1", "-m", "ünï \"q\"", "-D", "publish", "content-type", "ct", "-D", "publish", "user-property", "x", "y",
			"-D", "publish", "correlation-data", "cd", "-D", "publish", "response-topic", "r",
			"-D", "publish", "payload-format-indicator", "1", "-D", "publish", "message-expiry-interval", "60"},
		{"-t", "j/b", "-q", "0", "-m", "plain"},
		{"-t", "j/c", "-q", "1", "-n"},
	})
	if got != want {
		t.Fatalf("tern sub -F %%j:\n%s\nmosquitto_sub -F %%j:\n%s", got, want)
	}
}

// tern sub -F %J prints the payload as JSON, as mosquitto_sub does: compacted, null when
// empty, and for a payload that is not JSON nothing in its place and an error on stderr.
func TestSubRawJSONFormatMatchesMosquittoSub(t *testing.T) {
	got, want, stderr := subFormatBoth(t, "<%t> %J <end>", [][]string{
		{"-t", "j/a", "-q", "1", "-m", `{ "a" : [1, 2, "x y"],  "b": {"c": null}, "d": true }`},
		{"-t", "j/b", "-q", "0", "-m", "not json"},
		{"-t", "j/c", "-q", "1", "-n"},
		{"-t", "j/d", "-q", "1", "-m", ` "text" `},
	})
	if got != want {
		t.Fatalf("tern sub -F %%J:\n%s\nmosquitto_sub -F %%J:\n%s", got, want)
	}
	if !strings.Contains(stderr, "Error: Message payload is not valid JSON on topic j/b.") {
		t.Fatalf("no error for the payload that is not JSON; stderr: %s", stderr)
	}
}

// subFormatBoth subscribes tern sub and mosquitto_sub to j/# at QoS 1 with -F format,
// publishes each of pubs with mosquitto_pub (arguments after host and port), and returns
// what each printed (times of receipt in "tst" blanked; mosquitto_sub's "Error: " lines,
// its stderr, left out) and tern sub's stderr. The JSON times must have mosquitto_sub's form.
func subFormatBoth(t *testing.T, format string, pubs [][]string) (got, want, stderr string) {
	t.Helper()
	url := startMosquitto(t)
	port := url[strings.LastIndex(url, ":")+1:]
	n := strconv.Itoa(len(pubs))
	ms := startMosqSub(t, url, "-q", "1", "-t", "j/#", "-C", n, "-F", format)
	s := startTernSub(t, "-L", url, "-q", "1", "-t", "j/#", "-C", n, "-F", format)
	for _, args := range pubs {
		all := append([]string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", port}, args...)
		if out, err := exec.Command("mosquitto_pub", all...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	var lines []string
	for _, l := range ms.lines(t, 10*time.Second) {
		if !strings.HasPrefix(l, "Error: ") {
			lines = append(lines, l)
		}
	}
	if st := s.wait(t, 10*time.Second); st != 0 {
		t.Fatalf("status %d: %s", st, s.stderr.String())
	}
	if strings.Contains(s.stdout.String(), `"tst"`) &&
		!regexp.MustCompile(`"tst":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z[+-]\d{4}"`).MatchString(s.stdout.String()) {
		t.Fatalf("tst not in mosquitto_sub's form: %s", s.stdout.String())
	}
	tst := regexp.MustCompile(`"tst":"[^"]*"`)
	want = tst.ReplaceAllString(strings.Join(lines, "\n")+"\n", `"tst":""`)
	return tst.ReplaceAllString(s.stdout.String(), `"tst":""`), want, s.stderr.String()
}
