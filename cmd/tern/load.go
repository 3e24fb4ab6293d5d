package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// posError is a problem at a place in the file being loaded.
type posError struct {
	at  pos
	msg string
}

func (e *posError) Error() string { return fmt.Sprintf("%d:%d: %s", e.at.line, e.at.col, e.msg) }

func errAt(p pos, format string, args ...any) error {
	return &posError{p, fmt.Sprintf(format, args...)}
}

// invalidFile lists what is wrong with one scenario file, each as file:line:column.
type invalidFile struct {
	file string
	errs []string
}

func (e *invalidFile) Error() string { return strings.Join(e.errs, "\n") }

// scenario is a loaded, validated scenario ready to run.
type scenario struct {
	file    string
	dir     string // relative paths in the file are resolved from here
	name    string
	broker  string
	timeout duration
	vars    map[string]string
	clients map[string]*clientSpec
	steps   []*step
}

// maxScenarioBytes bounds a scenario file: the loader reads it whole.
const maxScenarioBytes = 16 << 20

// maxFlowNesting bounds how deeply [ ] and { } may nest in a scenario file. The YAML parser
// takes time that grows faster than the depth (seconds at 50,000), and no scenario needs more
// than a few levels.
const maxFlowNesting = 256

// checkNesting refuses a file whose flow collections nest deeper than maxFlowNesting, before
// the parser sees it. Brackets in quoted scalars and comments do not count; in block scalars
// they do, which only matters past the limit.
func checkNesting(src []byte) error {
	depth, line, col := 0, 1, 0
	var quote byte // the quote of the scalar we are in, or 0
	comment, escaped := false, false
	for i, c := range src {
		col++
		if c == '\n' {
			line, col, comment = line+1, 0, false
			continue // quoted scalars may span lines
		}
		switch {
		case comment:
		case quote == '"':
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				quote = 0
			}
		case quote == '\'':
			if c == '\'' {
				quote = 0 // a doubled '' closes and reopens: two toggles
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || src[i-1] == ' ' || src[i-1] == '\t' || src[i-1] == '\n'):
			comment = true
		case c == '[' || c == '{':
			if depth++; depth > maxFlowNesting {
				return errAt(pos{line, col}, "[ and { nested deeper than %d", maxFlowNesting)
			}
		case c == ']' || c == '}':
			if depth > 0 {
				depth--
			}
		}
	}
	return nil
}

// loadScenario reads, decodes and validates one file. overrides (--var) replace or add
// vars. Every problem found is returned in one *invalidFile.
func loadScenario(file string, overrides map[string]string) (*scenario, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, &invalidFile{file, []string{fmt.Sprintf("%s: %v", file, errors.Unwrap(err))}}
	}
	if fi.Size() > maxScenarioBytes {
		return nil, &invalidFile{file, []string{fmt.Sprintf("%s: larger than %d bytes", file, maxScenarioBytes)}}
	}
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, &invalidFile{file, []string{fmt.Sprintf("%s: %v", file, err)}}
	}
	sc, errs := parseScenario(src, filepath.Dir(file), overrides)
	if len(errs) > 0 {
		inv := &invalidFile{file: file}
		for _, e := range errs {
			inv.errs = append(inv.errs, file+":"+describeYAMLError(e))
		}
		return nil, inv
	}
	sc.file = file
	if sc.name == "" {
		sc.name = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	}
	return sc, nil
}

// parseScenario decodes src (a tern scenario or a venom test suite) and validates it.
func parseScenario(src []byte, dir string, overrides map[string]string) (*scenario, []error) {
	if err := checkNesting(src); err != nil {
		return nil, []error{err}
	}
	f, err := parser.ParseBytes(src, 0)
	if err != nil {
		return nil, []error{err}
	}
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		return nil, []error{errAt(pos{1, 1}, "want one YAML document with name, clients and steps")}
	}
	body := f.Docs[0].Body
	if body.Type() != ast.MappingType {
		return nil, []error{errAt(posOf(body), "want a mapping with name, clients and steps")}
	}
	var sc *scenario
	if hasKey(body, "testcases") {
		sc, err = decodeVenom(body)
	} else {
		sc, err = decodeTern(body)
	}
	if err != nil {
		return nil, []error{err}
	}
	sc.dir = dir
	for k, v := range overrides {
		sc.vars[k] = v
	}
	v := &validator{sc: sc}
	v.run(src)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return sc, nil
}

func hasKey(n ast.Node, key string) bool {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		return false
	}
	for _, kv := range m.Values {
		if kv.Key != nil && kv.Key.String() == key {
			return true
		}
	}
	return false
}

func decodeTern(body ast.Node) (*scenario, error) {
	var sf scenarioFile
	if err := yaml.NodeToValue(body, &sf, yaml.Strict()); err != nil {
		return nil, err
	}
	sc := &scenario{name: sf.Name, broker: sf.Broker, timeout: sf.Timeout, vars: map[string]string{},
		clients: sf.Clients, steps: sf.Steps}
	if sc.clients == nil {
		sc.clients = map[string]*clientSpec{}
	}
	for _, it := range sf.Vars {
		sc.vars[fmt.Sprint(it.Key)] = scalarString(it.Value)
	}
	return sc, nil
}

// scalarString renders a YAML scalar as text (numbers and booleans as written).
func scalarString(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

var yamlTypeErr = regexp.MustCompile(`cannot unmarshal (\S+) into Go (?:struct field|value) .*of type (\S+)`)

// describeYAMLError turns a decoding error into "line:column: message".
func describeYAMLError(err error) string {
	var pe *posError
	if errors.As(err, &pe) {
		return pe.Error()
	}
	var ye yaml.Error
	if errors.As(err, &ye) {
		msg := ye.GetMessage()
		if m := yamlTypeErr.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("wrong type: want %s, got %s", goTypeWord(m[2]), goTypeWord(m[1]))
		}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			return fmt.Sprintf("%d:%d: %s", tk.Position.Line, tk.Position.Column, msg)
		}
		return "1:1: " + msg
	}
	return "1:1: " + err.Error()
}

func goTypeWord(t string) string {
	switch strings.TrimLeft(t, "*") {
	case "int", "int64", "uint64", "uint8", "uint16", "uint32":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "[]interface", "[]interface {}":
		return "a list"
	case "map[string]interface", "map[string]interface {}":
		return "a mapping"
	}
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "main."):
		return "a mapping"
	}
	return t
}

// validator checks a decoded scenario: references, ranges, files, templates.
type validator struct {
	sc   *scenario
	errs []error
	subs map[string]bool // subscription names defined so far, in step order
}

func (v *validator) errf(p pos, format string, args ...any) {
	v.errs = append(v.errs, errAt(p, format, args...))
}

func (v *validator) run(src []byte) {
	v.subs = map[string]bool{}
	names := make([]string, 0, len(v.sc.clients))
	for n := range v.sc.clients {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v.client(n, v.sc.clients[n])
	}
	if len(v.sc.steps) == 0 {
		v.errf(pos{1, 1}, "no steps")
	}
	for _, s := range v.sc.steps {
		v.step(s)
	}
	v.templates(src)
	sort.SliceStable(v.errs, func(i, j int) bool {
		a, b := errPos(v.errs[i]), errPos(v.errs[j])
		return a.line < b.line || a.line == b.line && a.col < b.col
	})
}

func errPos(err error) pos {
	var pe *posError
	if errors.As(err, &pe) {
		return pe.at
	}
	return pos{}
}

// templates reports every {{.name}} whose name is not a var (seq is always defined).
func (v *validator) templates(src []byte) {
	for i, line := range bytes.Split(src, []byte("\n")) {
		for _, m := range templateRef.FindAllSubmatchIndex(line, -1) {
			n := string(line[m[2]:m[3]])
			if _, ok := v.sc.vars[n]; !ok && n != "seq" {
				v.errf(pos{i + 1, m[0] + 1}, "undefined var %q (define it under vars or with --var %s=...)", n, n)
			}
		}
	}
}

func (v *validator) client(n string, c *clientSpec) {
	if c == nil {
		v.errs = append(v.errs, errAt(pos{1, 1}, "client %q: empty definition", n))
		return
	}
	if p, err := parseProtocol(c.Protocol.s); err != nil {
		v.errf(c.Protocol.at, "client %q: protocol %v", n, err)
	} else if p == tern.MQTT311 {
		v.v5Only(n, c)
	}
	if c.Broker != "" && !strings.Contains(c.Broker, "{{") {
		if _, err := parseBrokerArg(c.Broker); err != nil {
			v.errf(c.at, "client %q: %v", n, err)
		}
	}
	if c.ReceiveMaximum < 0 || c.ReceiveMaximum > 65535 {
		v.errf(c.at, "client %q: receive_maximum %d: want [0, 65535]", n, c.ReceiveMaximum)
	}
	if c.MaxPacketSize < 0 || c.MaxPacketSize > 1<<32-1 {
		v.errf(c.at, "client %q: maximum_packet_size %d: want [0, 4294967295]", n, c.MaxPacketSize)
	}
	if t := c.TLS; t != nil {
		for _, f := range []*name{t.CA, t.Cert, t.Key} {
			v.file(f)
		}
		if (t.Cert == nil) != (t.Key == nil) {
			v.errf(c.at, "client %q: tls cert and key go together", n)
		}
	}
	if c.Will != nil {
		v.message(c.Will, nil)
		if c.Will.Topic == "" {
			v.errf(c.Will.at, "client %q: will needs a topic", n)
		}
	}
}

// v5Only reports the settings of a 3.1.1 client that only MQTT 5 can carry.
func (v *validator) v5Only(n string, c *clientSpec) {
	for _, f := range []struct {
		set bool
		key string
	}{
		{c.ReceiveMaximum > 0, "receive_maximum"},
		{c.MaxPacketSize > 0, "maximum_packet_size"},
		{len(c.UserProperties.kv) > 0, "user_properties"},
		{c.RequestProblem != nil, "request_problem_info"},
		{c.RequestResponse, "request_response_info"},
	} {
		if f.set {
			v.errf(c.at, "client %q: %s is MQTT 5 only (protocol %s)", n, f.key, c.Protocol.s)
		}
	}
}

// file reports a file that does not exist (templated paths are checked when used).
func (v *validator) file(f *name) {
	if f == nil || strings.Contains(f.s, "{{") {
		return
	}
	if f.s == "" {
		v.errf(f.at, "empty file name")
		return
	}
	if _, err := os.Stat(v.sc.path(f.s)); err != nil {
		v.errf(f.at, "file %s: %v", f.s, errors.Unwrap(err))
	}
}

// path resolves p against the scenario file's directory.
func (sc *scenario) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(sc.dir, p)
}

func (v *validator) clientRef(r name, what string, at pos) {
	if r.s == "" {
		v.errf(at, "%s: client missing", what)
		return
	}
	if _, ok := v.sc.clients[r.s]; !ok {
		v.errf(r.at, "%s: undefined client %q", what, r.s)
	}
}

func (v *validator) step(s *step) {
	if s == nil {
		return
	}
	kinds := s.kinds()
	switch len(kinds) {
	case 0:
		v.errf(s.at, "step has no action (want one of connect, disconnect, subscribe, unsubscribe, publish, expect, session, wait, cut, restart_broker, parallel)")
		return
	case 1:
	default:
		v.errf(s.at, "step has several actions (%s): want one", strings.Join(kinds, ", "))
		return
	}
	switch {
	case s.Connect != nil:
		v.clientRef(*s.Connect, "connect", s.at)
	case s.Cut != nil:
		v.clientRef(*s.Cut, "cut", s.at)
	case s.Disconnect != nil:
		v.clientRef(s.Disconnect.Client, "disconnect", s.at)
		if r := s.Disconnect.Reason; r < 0 || r > 255 {
			v.errf(s.at, "disconnect: reason %d: want a reason code in [0, 255]", r)
		}
	case s.Subscribe != nil:
		v.subscribe(s)
	case s.Unsubscribe != nil:
		v.clientRef(s.Unsubscribe.Client, "unsubscribe", s.at)
		if !v.subs[s.Unsubscribe.Subscription.s] {
			v.errf(s.Unsubscribe.Subscription.at, "unsubscribe: no subscription named %q before this step", s.Unsubscribe.Subscription.s)
		}
	case s.Publish != nil:
		v.publish(s)
	case s.Expect != nil:
		v.expect(s)
	case s.Session != nil:
		v.session(s)
	case s.RestartBroker != nil:
		if !*s.RestartBroker {
			v.errf(s.at, "restart_broker: want true")
		}
	case s.Parallel != nil:
		if len(s.Parallel) == 0 {
			v.errf(s.at, "parallel: no steps")
		}
		for _, p := range s.Parallel {
			v.step(p)
		}
	case s.venom != nil:
		v.venom(s)
	}
}

func (v *validator) filters(fs []*filterSpec, what string, at pos) {
	if len(fs) == 0 {
		v.errf(at, "%s: no filters", what)
	}
	for _, f := range fs {
		if f == nil {
			continue
		}
		if strings.Contains(f.Topic, "{{") {
			continue
		}
		if err := packet.ValidateTopicFilter(f.Topic); err != nil {
			v.errf(f.at, "%s: filter %q: %v", what, f.Topic, err)
		}
		if f.QoS < 0 || f.QoS > 2 {
			v.errf(f.at, "%s: qos %d: want 0, 1 or 2", what, f.QoS)
		}
		if f.RetainHandling < 0 || f.RetainHandling > 2 {
			v.errf(f.at, "%s: retain_handling %d: want 0, 1 or 2", what, f.RetainHandling)
		}
	}
}

func (v *validator) subscribe(s *step) {
	sub := s.Subscribe
	v.clientRef(sub.Client, "subscribe", s.at)
	v.filters(sub.Filters, "subscribe", s.at)
	if sub.QoS != nil && (*sub.QoS < 0 || *sub.QoS > 2) {
		v.errf(s.at, "subscribe: qos %d: want 0, 1 or 2", *sub.QoS)
	}
	if sub.Identifier < 0 || sub.Identifier > 268435455 {
		v.errf(s.at, "subscribe: subscription_id %d: want [1, 268435455]", sub.Identifier)
	}
	if len(sub.Filters) > 0 && sub.Filters[0] != nil {
		v.subs[subName(sub.As, sub.Filters)] = true
	}
}

// subName is a subscription's name: as, else its first filter.
func subName(as string, fs []*filterSpec) string {
	if as != "" || len(fs) == 0 || fs[0] == nil {
		return as
	}
	return fs[0].Topic
}

func (v *validator) session(s *step) {
	ss := s.Session
	v.clientRef(ss.Client, "session", s.at)
	switch {
	case ss.Release && len(ss.Register) > 0:
		v.errf(s.at, "session: register and release in one step: want one")
	case ss.Release:
	default:
		v.filters(ss.Register, "session register", s.at)
		if len(ss.Register) > 0 && ss.Register[0] != nil {
			v.subs[subName(ss.As, ss.Register)] = true
		}
	}
}

func (v *validator) publish(s *step) {
	p := s.Publish
	v.clientRef(p.Client, "publish", s.at)
	if p.Repeat < 0 {
		v.errf(s.at, "publish: repeat %d: want 1 or more", p.Repeat)
	}
	if len(p.Messages) > 0 && p.Repeat > 0 {
		v.errf(s.at, "publish: messages and repeat: want one")
	}
	if len(p.Messages) == 0 {
		v.message(p.defaults(), nil)
		if p.body.Topic == "" {
			v.errf(s.at, "publish: topic missing")
		}
		return
	}
	if b := p.body; b.Payload != nil || b.File != nil || b.Base64 != nil || b.JSON != nil || b.Msgpack != nil {
		v.errf(s.at, "publish: a payload beside messages: put it in each message")
	}
	v.message(p.defaults(), nil)
	for _, m := range p.Messages {
		if m == nil {
			continue
		}
		v.message(m, p.defaults())
		if m.Topic == "" && p.body.Topic == "" {
			v.errf(m.at, "publish: topic missing")
		}
	}
}

// message checks one message: one payload source, ranges, topic, files.
func (v *validator) message(m *msgSpec, def *msgSpec) {
	n := 0
	for _, set := range []bool{m.Payload != nil, m.File != nil, m.Base64 != nil, m.JSON != nil, m.Msgpack != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		v.errf(m.at, "message: several payloads (payload, file, base64, json, msgpack): want one")
	}
	v.file(m.File)
	if m.Base64 != nil {
		if _, err := base64.StdEncoding.DecodeString(*m.Base64); err != nil {
			v.errf(m.at, "message: base64: %v", err)
		}
	}
	if m.QoS != nil && (*m.QoS < 0 || *m.QoS > 2) {
		v.errf(m.at, "message: qos %d: want 0, 1 or 2", *m.QoS)
	}
	if m.PayloadFormat < 0 || m.PayloadFormat > 1 {
		v.errf(m.at, "message: payload_format %d: want 0 or 1", m.PayloadFormat)
	}
	if m.Topic != "" && !strings.Contains(m.Topic, "{{") {
		if err := packet.ValidateTopicName(m.Topic); err != nil {
			v.errf(m.at, "message: topic %q: %v", m.Topic, err)
		}
	}
}

func (v *validator) expect(s *step) {
	e := s.Expect
	if !v.subs[e.On.s] {
		if e.On.s == "" {
			v.errf(s.at, "expect: on missing (the name of a subscription)")
		} else {
			v.errf(e.On.at, "expect: no subscription named %q before this step", e.On.s)
		}
	}
	for _, c := range []*int{e.Count, e.Min, e.Max} {
		if c != nil && *c < 0 {
			v.errf(s.at, "expect: a count must not be negative")
		}
	}
	if e.Count != nil && (e.Min != nil || e.Max != nil) {
		v.errf(s.at, "expect: count with min or max: want count alone, or min and/or max")
	}
	if e.Min != nil && e.Max != nil && *e.Min > *e.Max {
		v.errf(s.at, "expect: min %d above max %d", *e.Min, *e.Max)
	}
	if e.None != nil && (e.Count != nil || e.Min != nil || e.Max != nil || len(e.Messages) > 0 || e.All != nil) {
		v.errf(s.at, "expect: none asserts silence: no count, min, max, all or messages with it")
	}
	if e.Count != nil && len(e.Messages) > *e.Count {
		v.errf(s.at, "expect: %d messages listed, count %d", len(e.Messages), *e.Count)
	}
	if e.Ordered && len(e.Messages) == 0 {
		v.errf(s.at, "expect: ordered needs messages (the order to check)")
	}
	if e.All != nil {
		v.matcher(e.All)
	}
	for _, m := range e.Messages {
		if m != nil {
			v.matcher(m)
		}
	}
}

func (v *validator) matcher(m *matcher) {
	if m.Regex != nil {
		if _, err := regexp.Compile(m.Regex.s); err != nil {
			v.errf(m.Regex.at, "regex: %v", err)
		}
	}
	if m.QoS != nil && (*m.QoS < 0 || *m.QoS > 2) {
		v.errf(m.at, "qos %d: want 0, 1 or 2", *m.QoS)
	}
	if m.Topic != "" && !strings.Contains(m.Topic, "{{") {
		if err := packet.ValidateTopicFilter(m.Topic); err != nil {
			v.errf(m.at, "topic %q: %v", m.Topic, err)
		}
	}
	for _, it := range m.JSON {
		if _, err := parseJSONPath(fmt.Sprint(it.Key)); err != nil {
			v.errf(m.at, "json path %q: %v", it.Key, err)
		}
	}
}
