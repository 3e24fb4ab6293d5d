package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"

	"github.com/ternmq/tern"
)

// A venom test suite (name, vars, testcases of steps) whose steps are type: mqtt runs
// unchanged: each step becomes one step of a scenario, run with the same machinery as a
// tern scenario, and its assertions are checked against a result shaped like venom's.
// Unlike venom's executor, a subscriber that gets fewer than messageLimit messages within
// timeout fails, and messages beyond the limit are reported, not a crash.

type venomSuite struct {
	Name      string        `yaml:"name"`
	Version   string        `yaml:"version"`
	Vars      yaml.MapSlice `yaml:"vars"`
	TestCases []*venomCase  `yaml:"testcases"`
}

type venomCase struct {
	Name  string       `yaml:"name"`
	Steps []*venomStep `yaml:"steps"`
}

// venomStep holds the keys of venom's mqtt executor.
type venomStep struct {
	Type                string     `yaml:"type"`
	Name                string     `yaml:"name"`
	Info                any        `yaml:"info"`
	Addrs               string     `yaml:"addrs"`
	ClientType          name       `yaml:"clientType"`
	PersistSubscription bool       `yaml:"persistSubscription"`
	ClientID            string     `yaml:"clientId"`
	Topics              []string   `yaml:"topics"`
	QoS                 int        `yaml:"qos"`
	Messages            []venomMsg `yaml:"messages"`
	MessageLimit        int        `yaml:"messageLimit"`
	Timeout             int64      `yaml:"timeout"`        // milliseconds
	ConnectTimeout      int64      `yaml:"connectTimeout"` // milliseconds
	ProtocolVersion     *name      `yaml:"protocolVersion"`
	Assertions          []*name    `yaml:"assertions"`

	client string // the scenario client this step uses
	at     pos
}

func (v *venomStep) UnmarshalYAML(n ast.Node) error {
	v.at = posOf(n)
	type plain venomStep
	return yaml.NodeToValue(n, (*plain)(v), yaml.Strict())
}

type venomMsg struct {
	Topic    string `yaml:"topic"`
	QoS      int    `yaml:"qos"`
	Retained bool   `yaml:"retained"`
	Payload  string `yaml:"payload"`
}

// Venom's defaults when a step leaves them out.
const (
	venomDefaultTimeout        = 5 * time.Second
	venomDefaultConnectTimeout = 5 * time.Second
)

// decodeVenom turns a venom suite into a scenario: one client per step (steps with the
// same clientId share one, so a persistent session carries over).
func decodeVenom(body ast.Node) (*scenario, error) {
	var vs venomSuite
	if err := yaml.NodeToValue(body, &vs, yaml.Strict()); err != nil {
		return nil, err
	}
	sc := &scenario{name: vs.Name, vars: map[string]string{}, clients: map[string]*clientSpec{}}
	for _, it := range vs.Vars {
		sc.vars[fmt.Sprint(it.Key)] = scalarString(it.Value)
	}
	n := 0
	for _, tc := range vs.TestCases {
		if tc == nil {
			continue
		}
		for _, vst := range tc.Steps {
			if vst == nil {
				continue
			}
			n++
			vst.client = fmt.Sprintf("step%d", n)
			if vst.ClientID != "" {
				vst.client = "id:" + vst.ClientID
			}
			ct := venomDefaultConnectTimeout
			if vst.ConnectTimeout > 0 {
				ct = time.Duration(vst.ConnectTimeout) * time.Millisecond
			}
			cs := &clientSpec{Broker: vst.Addrs, ClientID: vst.ClientID,
				ConnectTimeout: duration{ct, true}, at: vst.at}
			if vst.ProtocolVersion != nil {
				cs.Protocol = *vst.ProtocolVersion // 4 is 3.1.1, as venom's (Paho's) level
			}
			sc.clients[vst.client] = cs
			label := tc.Name
			if vst.Name != "" {
				label += ": " + vst.Name
			}
			sc.steps = append(sc.steps, &step{Name: label, venom: vst, at: vst.at})
		}
	}
	return sc, nil
}

var venomOps = map[string]int{ // operator: number of operands
	"ShouldEqual": 1, "ShouldNotEqual": 1, "ShouldBeEmpty": 0, "ShouldNotBeEmpty": 0,
	"ShouldContainSubstring": 1, "ShouldNotContainSubstring": 1, "ShouldBeGreaterThan": 1,
	"ShouldBeGreaterThanOrEqualTo": 1, "ShouldBeLessThan": 1, "ShouldBeLessThanOrEqualTo": 1,
	"ShouldBeTrue": 0, "ShouldBeFalse": 0,
}

func (v *validator) venom(s *step) {
	vs := s.venom
	if vs.Type != "mqtt" {
		v.errf(vs.at, "venom step type %q: only type: mqtt runs here", vs.Type)
		return
	}
	switch vs.ClientType.s {
	case "publisher", "subscriber", "persistent_queue":
	default:
		v.errf(vs.ClientType.at, "clientType %q: want publisher, subscriber or persistent_queue", vs.ClientType.s)
	}
	if p := vs.ProtocolVersion; p != nil {
		if _, err := parseProtocol(p.s); err != nil {
			v.errf(p.at, "protocolVersion %v", err)
		}
	}
	if vs.ClientType.s != "publisher" && len(vs.Topics) == 0 {
		v.errf(vs.at, "%s: topics missing", vs.ClientType.s)
	}
	if vs.ClientType.s == "persistent_queue" && vs.ClientID == "" {
		v.errf(vs.at, "persistent_queue: clientId missing (the session is found again by it)")
	}
	if vs.QoS < 0 || vs.QoS > 2 {
		v.errf(vs.at, "qos %d: want 0, 1 or 2", vs.QoS)
	}
	for _, m := range vs.Messages {
		if m.QoS < 0 || m.QoS > 2 {
			v.errf(vs.at, "message qos %d: want 0, 1 or 2", m.QoS)
		}
	}
	for _, a := range vs.Assertions {
		f := strings.Fields(a.s)
		if len(f) < 2 {
			v.errf(a.at, "assertion %q: want \"result.KEY ShouldOp [VALUE]\"", a.s)
			continue
		}
		want, ok := venomOps[f[1]]
		switch {
		case !ok:
			v.errf(a.at, "assertion %q: operator %s not supported", a.s, f[1])
		case want == 1 && len(f) < 3:
			v.errf(a.at, "assertion %q: %s needs a value", a.s, f[1])
		case !strings.HasPrefix(strings.ToLower(f[0]), "result."):
			v.errf(a.at, "assertion %q: want a result.KEY on the left", a.s)
		}
	}
}

// venomStep runs one venom mqtt step and checks its assertions.
func (r *runner) venomStep(ctx context.Context, vs *venomStep) error {
	start := time.Now()
	res, err := r.venomRun(ctx, vs)
	res["result.timeseconds"] = time.Since(start).Seconds()
	if err != nil {
		res["result.error"] = err.Error()
		// Assertions that expect an error may still pass; a step error with none
		// that looks at result.error fails the step.
		if !mentionsError(vs.Assertions) {
			return err
		}
	}
	for _, a := range vs.Assertions {
		if why := checkAssertion(a.s, res); why != "" {
			return failf("assertion %q (line %d): %s", a.s, a.at.line, why)
		}
	}
	return nil
}

func mentionsError(as []*name) bool {
	for _, a := range as {
		if strings.HasPrefix(strings.ToLower(a.s), "result.error ") || strings.HasPrefix(strings.ToLower(a.s), "result.err ") {
			return true
		}
	}
	return false
}

func (r *runner) venomRun(ctx context.Context, vs *venomStep) (map[string]any, error) {
	res := map[string]any{"result.error": ""}
	lc := r.live(vs.client)
	who := fmt.Sprintf("mqtt %s", vs.ClientType.s)
	filters := make([]tern.TopicFilter, 0, len(vs.Topics))
	for _, t := range vs.Topics {
		filters = append(filters, tern.TopicFilter{Topic: expand(t, r.sc.vars, 0), QoS: byte(vs.QoS)})
	}
	setList(res, "result.topics", vs.Topics)
	switch vs.ClientType.s {
	case "publisher":
		if err := r.connect(ctx, vs.client); err != nil {
			return res, err
		}
		for i, m := range vs.Messages {
			o := tern.PublishOptions{Topic: expand(m.Topic, r.sc.vars, i+1), Payload: []byte(expand(m.Payload, r.sc.vars, i+1)),
				QoS: byte(m.QoS), Retain: m.Retained}
			if err := lc.c.Publish(ctx, o); err != nil {
				return res, failf("%s: message %d to %s: %v", who, i+1, o.Topic, err)
			}
		}
		return res, r.disconnect(ctx, &disconnectSpec{Client: name{s: vs.client}})
	case "persistent_queue":
		fs := make([]*filterSpec, 0, len(vs.Topics))
		for _, t := range vs.Topics {
			fs = append(fs, &filterSpec{Topic: t, QoS: vs.QoS})
		}
		return res, r.session(ctx, &sessionSpec{Client: name{s: vs.client}, Register: fs, As: vs.client})
	}
	// subscriber: on a registered session, read what it queued (through the
	// registration's route); otherwise subscribe before connecting.
	lc.persistent = vs.PersistSubscription || len(lc.sessions) > 0
	lc.c = nil
	if _, err := r.ensure(vs.client); err != nil {
		return res, err
	}
	var col *collector
	if len(lc.sessions) > 0 {
		col = lc.sessions[0].col
	} else {
		col = r.collectorFor(vs.client + "#sub")
		sub, err := lc.c.SubscribeCallback(ctx, filters, col.receive)
		if err != nil {
			return res, failf("%s: %v", who, err)
		}
		lc.pending = append(lc.pending, sub)
	}
	if err := r.connect(ctx, vs.client); err != nil {
		return res, err
	}
	timeout := venomDefaultTimeout
	if vs.Timeout > 0 {
		timeout = time.Duration(vs.Timeout) * time.Millisecond
	}
	if vs.MessageLimit > 0 {
		col.waitFor(ctx, vs.MessageLimit, time.Now().Add(timeout))
	} else {
		col.waitFor(ctx, -1, time.Now().Add(timeout))
	}
	derr := r.disconnect(ctx, &disconnectSpec{Client: name{s: vs.client}})
	msgs := col.take()
	setMessages(res, msgs)
	switch {
	case vs.MessageLimit > 0 && len(msgs) < vs.MessageLimit:
		return res, failf("%s: wanted %d messages within %v, got %d%s", who, vs.MessageLimit, timeout, len(msgs), listSuffix(msgs))
	case vs.MessageLimit > 0 && len(msgs) > vs.MessageLimit:
		return res, failf("%s: wanted %d messages, got %d: %d extra (%s)", who, vs.MessageLimit, len(msgs),
			len(msgs)-vs.MessageLimit, listMsgs(msgs[vs.MessageLimit:]))
	}
	return res, derr
}

func setList(res map[string]any, key string, items []string) {
	base := key[strings.LastIndexByte(key, '.')+1:]
	res[key] = items
	res[key+".__len__"] = len(items)
	for i, it := range items {
		res[fmt.Sprintf("%s.%s%d", key, base, i)] = it
	}
}

// setMessages fills result.messages and result.messagesjson the way venom flattens them.
func setMessages(res map[string]any, msgs []got) {
	res["result.messages.__len__"] = len(msgs)
	res["result.messagesjson.__len__"] = len(msgs)
	for i, g := range msgs {
		k := fmt.Sprintf("result.messages.messages%d", i)
		res[k+".topic"], res[k+".payload"], res[k+".qos"], res[k+".retained"] = g.Topic, string(g.Payload), int(g.QoS), g.Retain
		var doc any
		if json.Unmarshal(g.Payload, &doc) != nil {
			doc = string(g.Payload)
		}
		flatten(res, fmt.Sprintf("result.messagesjson.messagesjson%d", i), doc)
	}
}

func flatten(res map[string]any, key string, v any) {
	res[key] = v
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			flatten(res, key+"."+strings.ToLower(k), e)
		}
	case []any:
		res[key+".__len__"] = len(x)
		base := key[strings.LastIndexByte(key, '.')+1:]
		for i, e := range x {
			flatten(res, fmt.Sprintf("%s.%s%d", key, base, i), e)
		}
	}
}

// checkAssertion evaluates "result.KEY ShouldOp [VALUE]"; "" when it holds.
func checkAssertion(a string, res map[string]any) string {
	f := strings.Fields(a)
	key, op, want := strings.ToLower(f[0]), f[1], strings.Join(f[2:], " ")
	want = strings.Trim(want, `"'`)
	actual, found := res[key]
	if key == "result.err" {
		actual, found = res["result.error"], true
	}
	text := ""
	if found {
		text = fmt.Sprint(actual)
	}
	empty := !found || text == "" || text == "[]" || text == "map[]" || text == "0" && strings.HasSuffix(key, "__len__")
	switch op {
	case "ShouldBeEmpty":
		if !empty {
			return fmt.Sprintf("%s is %q, want empty", f[0], text)
		}
		return ""
	case "ShouldNotBeEmpty":
		if empty {
			return fmt.Sprintf("%s is empty", f[0])
		}
		return ""
	}
	if !found {
		return fmt.Sprintf("%s: no such value in the result", f[0])
	}
	switch op {
	case "ShouldEqual", "ShouldNotEqual":
		eq := text == want
		if a, b, ok := numbers(text, want); ok {
			eq = a == b
		}
		if eq != (op == "ShouldEqual") {
			return fmt.Sprintf("%s is %q, want %s %q", f[0], text, op[6:], want)
		}
	case "ShouldContainSubstring", "ShouldNotContainSubstring":
		if strings.Contains(text, want) != (op == "ShouldContainSubstring") {
			return fmt.Sprintf("%s is %q (%s %q)", f[0], text, op, want)
		}
	case "ShouldBeTrue", "ShouldBeFalse":
		if text != strconv.FormatBool(op == "ShouldBeTrue") {
			return fmt.Sprintf("%s is %q, want %s", f[0], text, op[8:])
		}
	default: // comparisons
		a, b, ok := numbers(text, want)
		if !ok {
			return fmt.Sprintf("%s is %q: not a number to compare with %q", f[0], text, want)
		}
		holds := map[string]bool{"ShouldBeGreaterThan": a > b, "ShouldBeGreaterThanOrEqualTo": a >= b,
			"ShouldBeLessThan": a < b, "ShouldBeLessThanOrEqualTo": a <= b}[op]
		if !holds {
			return fmt.Sprintf("%s is %v (%s %v)", f[0], a, op, b)
		}
	}
	return ""
}

func numbers(a, b string) (float64, float64, bool) {
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	return x, y, err1 == nil && err2 == nil
}
