package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const scenarios = "testdata/scenarios/"

// runTern runs "tern run args..." in process and returns stdout, stderr and the status.
func runScenarios(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	st := dispatch(append([]string{"run"}, args...), &out, &errb)
	return out.String(), errb.String(), st
}

// Every passing scenario (each step type and matcher), on the embedded broker. The venom
// suite's persistent-queue pattern runs against Mosquitto only (TestRunScenariosMosquitto):
// on mochi 2.7.9 the last step, resuming the session, was seen to receive again the messages
// the step before had received and acknowledged, about 1 run in 20 (cause not established;
// README "mochi behaviours met" 7).
func TestRunScenariosEmbedded(t *testing.T) {
	out, errs, st := runScenarios(t, scenarios+"pass", scenarios+"embedded")
	if st != 0 || !strings.Contains(out, "5 scenarios: 5 passed, 0 failed") {
		t.Fatalf("status %d\n%s%s", st, out, errs)
	}
}

// The same scenarios against Mosquitto, plus those mochi cannot pass: Retain Handling, and
// the persistent queue of 1,000 messages (mochi 2.7.9 loses the last one when the worker
// resumes while mochi still routes it: README.md, "mochi behaviours met" 6, and
// TestMochiSession1000Repro).
func TestRunScenariosMosquitto(t *testing.T) {
	url := startMosquitto(t)
	out, errs, st := runScenarios(t, "--broker", url, scenarios+"pass", scenarios+"mosquitto",
		scenarios+"venom", "--var", "addrs="+url)
	if st != 0 || !strings.Contains(out, "7 scenarios: 7 passed, 0 failed") {
		t.Fatalf("status %d\n%s%s", st, out, errs)
	}
}

// Failing scenarios say exactly what was expected and what came; the status counts them.
func TestRunFailures(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"timeout.yml", `timeout.yml:8:11: expect: expect on sensors/#: wanted 3 messages within 300ms, got 1 (sensors/a "21.5")`},
		{"wrong_payload.yml", `wrong_payload.yml:8:11: expect: expect on t/#: message 1 (t/x "{\"temp\":20}"): json temp = 20, want 21.5`},
		{"extra.yml", `extra.yml:8:11: expect: expect on e/#: wanted 3 messages, got 5: 2 extra (e/x "m4", e/x "m5")`},
		{"bad_tls.yml", `bad_tls.yml:5:12: connect: client c: tls ca garbage.pem: no PEM certificate in it`},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, errs, st := runScenarios(t, scenarios+"fail/"+tc.file)
			if st != 1 || !strings.Contains(out, "\n  "+scenarios+"fail/"+tc.want+"\n") {
				t.Fatalf("status %d, want 1 and %q in\n%s%s", st, tc.want, out, errs)
			}
		})
	}
	// Two failed scenarios and a passing one: status 2.
	out, errs, st := runScenarios(t, scenarios+"fail/timeout.yml", scenarios+"fail/extra.yml", scenarios+"pass/parallel.yml")
	if st != 2 || !strings.Contains(out, "3 scenarios: 1 passed, 2 failed") {
		t.Fatalf("status %d, want 2\n%s%s", st, out, errs)
	}
}

// Refused credentials are a failure naming the broker's reason code.
func TestRunRefusedCredentials(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	// mosquitto_passwd format with a user that has no valid hash: no password matches.
	// Mosquitto may drop to its own user: let it read the file.
	if err := os.WriteFile(pw, []byte("alice:$7$101$invalid$invalid\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	url := startMosquitto(t, "allow_anonymous false", "password_file "+pw)
	sc := filepath.Join(dir, "creds.yml")
	os.WriteFile(sc, []byte("clients:\n  c: {username: alice, password: wrong}\nsteps:\n  - connect: c\n"), 0o600)
	out, errs, st := runScenarios(t, "--broker", url, sc)
	want := sc + ":4:12: connect: connect c: connect " + url + ": tern: connect refused: not authorized (0x87)"
	if st != 1 || !strings.Contains(out, want) {
		t.Fatalf("status %d, want 1 and %q in\n%s%s", st, want, out, errs)
	}
}

// Invalid files: every problem with file:line:column, nothing run, status 2.
func TestRunInvalid(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"unknown_key.yml", []string{`unknown_key.yml:5:36: unknown field "qoss"`}},
		{"wrong_type.yml", []string{`wrong_type.yml:4:41: wrong type: want an integer, got a string`}},
		{"undefined.yml", []string{
			`undefined.yml:2:17: client "c": protocol "3.1": MQTT 3.1 (protocol level 3) is not supported; want 5 or 311`,
			`undefined.yml:4:14: connect: undefined client "d"`,
			`undefined.yml:5:36: undefined var "room" (define it under vars or with --var room=...)`,
			`undefined.yml:5:54: file missing.bin: no such file or directory`,
			`undefined.yml:6:18: expect: no subscription named "nothing" before this step`,
		}},
		{"v311.yml", []string{
			`v311.yml:2:6: client "c": receive_maximum is MQTT 5 only (protocol 3.1.1)`,
			`v311.yml:3:17: client "d": protocol "7": want 5 (mqttv5) or 311 (3.1.1, mqttv311)`,
		}},
		{"absent.yml", []string{`absent.yml: no such file or directory`}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, errs, st := runScenarios(t, scenarios+"invalid/"+tc.file, scenarios+"pass/parallel.yml")
			if st != 2 || out != "" {
				t.Fatalf("status %d, stdout %q; want 2 and nothing run\n%s", st, out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, scenarios+"invalid/"+w+"\n") {
					t.Errorf("no %q in\n%s", w, errs)
				}
			}
		})
	}
	// A file nested far deeper than any scenario is refused before the YAML parser, which
	// takes seconds on such input; brackets in quotes and comments do not count.
	dir := t.TempDir()
	deep := filepath.Join(dir, "deep.yml")
	if err := os.WriteFile(deep, []byte("name: deep\nvars:\n  a: "+strings.Repeat("[", 50000)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, st := runScenarios(t, deep)
	if st != 2 || out != "" || !strings.Contains(errs, deep+":3:262: [ and { nested deeper than 256") {
		t.Errorf("status %d, stdout %q, stderr:\n%s", st, out, errs)
	}
	quoted := "name: q # " + strings.Repeat("[", 300) + "\nvars:\n  a: \"" + strings.Repeat("[", 300) +
		`\"` + "\"\n  b: '" + strings.Repeat("{", 300) + "'''\n"
	if err := checkNesting([]byte(quoted)); err != nil {
		t.Errorf("brackets in quotes and comments counted: %v", err)
	}
	// --var defines what the file lacks, but not the rest.
	_, errs, _ = runScenarios(t, "--var", "room=k", scenarios+"invalid/undefined.yml")
	if strings.Contains(errs, `"room"`) {
		t.Errorf("--var room did not define it:\n%s", errs)
	}
}

// The JUnit report has the testsuite/testcase/failure shape and counts CI systems read.
func TestRunJUnitAndJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junit.xml")
	out, errs, st := runScenarios(t, "--json", "--junit", path, scenarios+"fail/timeout.yml", scenarios+"pass/payloads.yml")
	if st != 1 {
		t.Fatalf("status %d\n%s%s", st, out, errs)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName  xml.Name `xml:"testsuites"`
		Tests    int      `xml:"tests,attr"`
		Failures int      `xml:"failures,attr"`
		Suites   []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Time    string `xml:"time,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
					Type    string `xml:"type,attr"`
					Text    string `xml:",chardata"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if doc.Tests != 2 || doc.Failures != 1 || len(doc.Suites) != 1 || doc.Suites[0].Tests != 2 ||
		doc.Suites[0].Failures != 1 || len(doc.Suites[0].Cases) != 2 {
		t.Fatalf("counts wrong:\n%s", b)
	}
	c0, c1 := doc.Suites[0].Cases[0], doc.Suites[0].Cases[1]
	if c0.Name != "too few messages" || c0.Failure == nil || c0.Failure.Type != "expect" ||
		!strings.Contains(c0.Failure.Text, "timeout.yml:8:11: expect: expect on sensors/#: wanted 3") ||
		c1.Failure != nil || c0.Time == "" {
		t.Fatalf("testcases wrong:\n%s", b)
	}

	// --json: NDJSON on stdout, the summary on stderr.
	if !strings.Contains(errs, "2 scenarios: 1 passed, 1 failed") {
		t.Errorf("no summary on stderr:\n%s", errs)
	}
	kinds := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds[ev["event"].(string)]++
	}
	if kinds["scenario_start"] != 2 || kinds["scenario_end"] != 2 || kinds["step_start"] != kinds["step_end"] ||
		kinds["step_start"] < 8 || kinds["message"] < 6 {
		t.Fatalf("events %v in\n%s", kinds, out)
	}
}

// The loader never panics, whatever the input.
func FuzzLoadScenario(f *testing.F) {
	for _, dir := range []string{"pass", "fail", "invalid", "venom", "embedded"} {
		files, _ := filepath.Glob(scenarios + dir + "/*.yml")
		for _, p := range files {
			b, _ := os.ReadFile(p)
			f.Add(b)
		}
	}
	f.Add([]byte("steps: [{parallel: [{parallel: []}]}]"))
	f.Add([]byte("testcases: [{steps: [{type: mqtt, assertions: [x]}]}]"))
	f.Fuzz(func(t *testing.T, src []byte) {
		sc, errs := parseScenario(src, scenarios+"pass", map[string]string{"x": "1"})
		if sc == nil && len(errs) == 0 {
			t.Fatal("no scenario and no error")
		}
		for _, e := range errs {
			_ = describeYAMLError(e)
		}
	})
}
