package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// templateRef is a {{.name}} reference in a scenario string.
var templateRef = regexp.MustCompile(`\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

// expand replaces {{.name}} with the var's value and {{.seq}} with seq. Validation has
// made sure every name is defined.
func expand(s string, vars map[string]string, seq int) string {
	if !strings.Contains(s, "{{") {
		return s
	}
	return templateRef.ReplaceAllStringFunc(s, func(ref string) string {
		n := templateRef.FindStringSubmatch(ref)[1]
		if n == "seq" {
			return strconv.Itoa(seq)
		}
		return vars[n]
	})
}

// got is one received message as the run keeps it.
type got struct {
	Topic           string
	Payload         []byte
	QoS             byte
	Retain          bool
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []kv
}

// String shows a message in a failure: topic and quoted payload, cut at 64 bytes.
func (g got) String() string {
	p := g.Payload
	more := ""
	if len(p) > 64 {
		p, more = p[:64], "…"
	}
	if utf8.Valid(p) {
		return fmt.Sprintf("%s %q%s", g.Topic, p, more)
	}
	return fmt.Sprintf("%s 0x%x%s", g.Topic, p, more)
}

// compiledMatcher is a matcher with its templates expanded and regex compiled.
type compiledMatcher struct {
	m  *matcher
	re *regexp.Regexp
	sc *scenario
}

func compileMatcher(m *matcher, sc *scenario) *compiledMatcher {
	c := &compiledMatcher{m: m, sc: sc}
	if m.Regex != nil {
		c.re = regexp.MustCompile(expand(m.Regex.s, sc.vars, 0)) // validated at load
	}
	return c
}

// mismatch returns why g does not meet the matcher, or "".
func (c *compiledMatcher) mismatch(g got) string {
	m, vars := c.m, c.sc.vars
	if m.Topic != "" && !topicMatches(expand(m.Topic, vars, 0), g.Topic) {
		return fmt.Sprintf("topic %s, want %s", g.Topic, expand(m.Topic, vars, 0))
	}
	if m.Payload != nil && string(g.Payload) != expand(*m.Payload, vars, 0) {
		return fmt.Sprintf("payload %q, want %q", g.Payload, expand(*m.Payload, vars, 0))
	}
	if m.Contains != nil && !bytes.Contains(g.Payload, []byte(expand(*m.Contains, vars, 0))) {
		return fmt.Sprintf("payload %q does not contain %q", g.Payload, expand(*m.Contains, vars, 0))
	}
	if c.re != nil && !c.re.Match(g.Payload) {
		return fmt.Sprintf("payload %q does not match /%s/", g.Payload, c.re)
	}
	if len(m.JSON) > 0 {
		var doc any
		if err := json.Unmarshal(g.Payload, &doc); err != nil {
			return fmt.Sprintf("payload is not JSON: %v", err)
		}
		for _, it := range m.JSON {
			path := fmt.Sprint(it.Key)
			if why := pathEquals(doc, path, it.Value); why != "" {
				return why
			}
		}
	}
	if m.Msgpack != nil {
		var doc any
		if err := msgpack.Unmarshal(g.Payload, &doc); err != nil {
			return fmt.Sprintf("payload is not msgpack: %v", err)
		}
		if !sameValue(doc, m.Msgpack.v) {
			return fmt.Sprintf("msgpack payload %s, want %s", showJSON(doc), showJSON(m.Msgpack.v))
		}
	}
	if m.QoS != nil && int(g.QoS) != *m.QoS {
		return fmt.Sprintf("qos %d, want %d", g.QoS, *m.QoS)
	}
	if m.Retain != nil && g.Retain != *m.Retain {
		return fmt.Sprintf("retain %v, want %v", g.Retain, *m.Retain)
	}
	if m.ContentType != nil && g.ContentType != expand(*m.ContentType, vars, 0) {
		return fmt.Sprintf("content type %q, want %q", g.ContentType, expand(*m.ContentType, vars, 0))
	}
	if m.ResponseTopic != nil && g.ResponseTopic != expand(*m.ResponseTopic, vars, 0) {
		return fmt.Sprintf("response topic %q, want %q", g.ResponseTopic, expand(*m.ResponseTopic, vars, 0))
	}
	if m.CorrelationData != nil && string(g.CorrelationData) != expand(*m.CorrelationData, vars, 0) {
		return fmt.Sprintf("correlation data %q, want %q", g.CorrelationData, expand(*m.CorrelationData, vars, 0))
	}
	for _, want := range m.UserProperties.kv {
		if !hasUserProperty(g.UserProperties, want.k, expand(want.v, vars, 0)) {
			return fmt.Sprintf("no user property %s=%s", want.k, expand(want.v, vars, 0))
		}
	}
	return ""
}

func hasUserProperty(ps []kv, k, v string) bool {
	for _, p := range ps {
		if p.k == k && p.v == v {
			return true
		}
	}
	return false
}

// topicMatches reports whether topic matches filter (which may hold wildcards).
func topicMatches(filter, topic string) bool {
	if filter == topic {
		return true
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "#") || strings.HasPrefix(filter, "+")) {
		return false // [MQTT-4.7.2-1] wildcards at the start do not match $ topics
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// jsonStep is one step of a JSON path: a key or an index.
type jsonStep struct {
	key   string
	index int // -1 for a key
}

// parseJSONPath parses "a.b[0].c" (an optional leading "$." is allowed).
func parseJSONPath(p string) ([]jsonStep, error) {
	p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
	if p == "" {
		return nil, nil // the whole document
	}
	var out []jsonStep
	for _, part := range strings.Split(p, ".") {
		key, rest, _ := strings.Cut(part, "[")
		if key == "" && rest == "" {
			return nil, fmt.Errorf("empty key")
		}
		if key != "" {
			out = append(out, jsonStep{key: key, index: -1})
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			n, err := strconv.Atoi(idx)
			if !ok || err != nil || n < 0 {
				return nil, fmt.Errorf("bad index [%s", rest)
			}
			out = append(out, jsonStep{index: n})
			rest = strings.TrimPrefix(after, "[")
			if after != "" && !strings.HasPrefix(after, "[") {
				return nil, fmt.Errorf("bad index [%s", rest)
			}
		}
	}
	return out, nil
}

// pathEquals checks that the value at path in doc equals want; "" when it does.
func pathEquals(doc any, path string, want any) string {
	steps, err := parseJSONPath(path)
	if err != nil {
		return fmt.Sprintf("json path %s: %v", path, err)
	}
	cur := doc
	for _, s := range steps {
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[s.key]
			if s.index >= 0 || !ok {
				return fmt.Sprintf("json %s: not found", path)
			}
			cur = v
		case []any:
			if s.index < 0 || s.index >= len(x) {
				return fmt.Sprintf("json %s: not found", path)
			}
			cur = x[s.index]
		default:
			return fmt.Sprintf("json %s: not found", path)
		}
	}
	if !sameValue(cur, want) {
		return fmt.Sprintf("json %s = %s, want %s", path, showJSON(cur), showJSON(want))
	}
	return ""
}

// sameValue compares two decoded values as JSON would see them: numbers by value, maps by
// content, whatever decoder produced them.
func sameValue(a, b any) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = normalize(e)
		}
		return s
	case []byte:
		return string(x)
	case nil, string, bool:
		return x
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.Map:
		m := map[string]any{}
		for _, k := range rv.MapKeys() {
			m[fmt.Sprint(k.Interface())] = normalize(rv.MapIndex(k).Interface())
		}
		return m
	case reflect.Slice:
		s := make([]any, rv.Len())
		for i := range s {
			s[i] = normalize(rv.Index(i).Interface())
		}
		return s
	}
	return fmt.Sprint(v)
}

func showJSON(v any) string {
	b, err := json.Marshal(normalize(v))
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
