package main

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// A scenario file is YAML: vars, named clients and steps run in order (see README.md,
// "Scenarios"). These types mirror the file; the loader decodes them strictly (an unknown
// key is an error) and remembers where each step and each reference sits, so that every
// validation error can name file:line:column.

// pos is a place in a scenario file.
type pos struct{ line, col int }

func posOf(n ast.Node) pos {
	if n == nil || n.GetToken() == nil {
		return pos{}
	}
	p := n.GetToken().Position
	return pos{p.Line, p.Column}
}

// name is a scalar that refers to something defined elsewhere (a client, a subscription).
type name struct {
	s  string
	at pos
}

func (r *name) UnmarshalYAML(n ast.Node) error {
	r.at = posOf(n)
	return yaml.NodeToValue(n, &r.s)
}

// duration is a Go duration string ("500ms", "5s"); a bare integer is seconds.
type duration struct {
	d   time.Duration
	set bool
}

func (d *duration) UnmarshalYAML(n ast.Node) error {
	var v any
	if err := yaml.NodeToValue(n, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case uint64:
		d.d = time.Duration(x) * time.Second
	case int64:
		if x < 0 {
			return fmt.Errorf("%s: a duration must not be negative", n.GetToken().Position)
		}
		d.d = time.Duration(x) * time.Second
	case string:
		p, err := time.ParseDuration(x)
		if err != nil || p < 0 {
			return errAt(posOf(n), "want a duration such as 500ms or 5s, got %q", x)
		}
		d.d = p
	default:
		return errAt(posOf(n), "want a duration such as 500ms or 5s")
	}
	d.set = true
	return nil
}

// value is any YAML value, kept with its place (a payload to encode, a value to compare).
type value struct {
	v  any
	at pos
}

func (v *value) UnmarshalYAML(n ast.Node) error {
	v.at = posOf(n)
	return yaml.NodeToValue(n, &v.v)
}

// userProps is a mapping of user properties; the file's order is kept.
type userProps struct {
	kv []kv
	at pos
}

type kv struct{ k, v string }

func (u *userProps) UnmarshalYAML(n ast.Node) error {
	u.at = posOf(n)
	var m yaml.MapSlice
	if err := yaml.NodeToValue(n, &m); err != nil {
		return err
	}
	for _, it := range m {
		u.kv = append(u.kv, kv{fmt.Sprint(it.Key), fmt.Sprint(it.Value)})
	}
	return nil
}

// scenarioFile is the top level of a scenario file.
type scenarioFile struct {
	Name    string                 `yaml:"name"`
	Broker  string                 `yaml:"broker"`
	Timeout duration               `yaml:"timeout"`
	Vars    yaml.MapSlice          `yaml:"vars"`
	Clients map[string]*clientSpec `yaml:"clients"`
	Steps   []*step                `yaml:"steps"`
}

// clientSpec is one named client.
type clientSpec struct {
	Broker          string    `yaml:"broker"`
	ClientID        string    `yaml:"client_id"`
	Username        string    `yaml:"username"`
	Password        *string   `yaml:"password"`
	TLS             *tlsSpec  `yaml:"tls"`
	CleanStart      *bool     `yaml:"clean_start"`
	SessionExpiry   *expiry   `yaml:"session_expiry"`
	KeepAlive       duration  `yaml:"keep_alive"`
	ConnectTimeout  duration  `yaml:"connect_timeout"`
	Protocol        name      `yaml:"protocol"`
	ReceiveMaximum  int       `yaml:"receive_maximum"`
	MaxPacketSize   int64     `yaml:"maximum_packet_size"`
	UserProperties  userProps `yaml:"user_properties"`
	RequestProblem  *bool     `yaml:"request_problem_info"`
	RequestResponse bool      `yaml:"request_response_info"`
	Will            *msgSpec  `yaml:"will"`

	at pos
}

func (c *clientSpec) UnmarshalYAML(n ast.Node) error {
	c.at = posOf(n)
	type plain clientSpec
	return yaml.NodeToValue(n, (*plain)(c), yaml.Strict())
}

// expiry is a session expiry: a duration, or "never".
type expiry struct {
	d     time.Duration
	never bool
}

func (e *expiry) UnmarshalYAML(n ast.Node) error {
	var s any
	if err := yaml.NodeToValue(n, &s); err == nil && s == "never" {
		e.never = true
		return nil
	}
	var d duration
	if err := d.UnmarshalYAML(n); err != nil {
		return errAt(posOf(n), "want a duration (such as 1h) or never")
	}
	e.d = d.d
	return nil
}

// tlsSpec names the PEM files of a TLS connection; paths are relative to the scenario file.
type tlsSpec struct {
	CA         *name  `yaml:"ca"`
	Cert       *name  `yaml:"cert"`
	Key        *name  `yaml:"key"`
	Insecure   bool   `yaml:"insecure"`
	ServerName string `yaml:"server_name"`
}

// step is one entry of steps: exactly one action, and an optional name.
type step struct {
	Name          string          `yaml:"name"`
	Connect       *name           `yaml:"connect"`
	Disconnect    *disconnectSpec `yaml:"disconnect"`
	Subscribe     *subscribeSpec  `yaml:"subscribe"`
	Unsubscribe   *unsubSpec      `yaml:"unsubscribe"`
	Publish       *publishSpec    `yaml:"publish"`
	Expect        *expectSpec     `yaml:"expect"`
	Session       *sessionSpec    `yaml:"session"`
	Wait          *duration       `yaml:"wait"`
	Cut           *name           `yaml:"cut"`
	RestartBroker *bool           `yaml:"restart_broker"`
	Parallel      []*step         `yaml:"parallel"`

	venom *venomStep // set for the steps of a venom test suite
	at    pos
}

func (s *step) UnmarshalYAML(n ast.Node) error {
	s.at = posOf(n)
	type plain step
	return yaml.NodeToValue(n, (*plain)(s), yaml.Strict())
}

// kind names the step's action.
func (s *step) kind() string {
	kinds := s.kinds()
	if len(kinds) == 1 {
		return kinds[0]
	}
	return "step"
}

func (s *step) kinds() []string {
	var k []string
	add := func(set bool, n string) {
		if set {
			k = append(k, n)
		}
	}
	add(s.Connect != nil, "connect")
	add(s.Disconnect != nil, "disconnect")
	add(s.Subscribe != nil, "subscribe")
	add(s.Unsubscribe != nil, "unsubscribe")
	add(s.Publish != nil, "publish")
	add(s.Expect != nil, "expect")
	add(s.Session != nil, "session")
	add(s.Wait != nil, "wait")
	add(s.Cut != nil, "cut")
	add(s.RestartBroker != nil, "restart_broker")
	add(s.Parallel != nil, "parallel")
	add(s.venom != nil, "mqtt")
	return k
}

// disconnectSpec: "disconnect: NAME" or a mapping.
type disconnectSpec struct {
	Client        name    `yaml:"client"`
	Reason        int     `yaml:"reason"`
	SessionExpiry *expiry `yaml:"session_expiry"`
}

func (d *disconnectSpec) UnmarshalYAML(n ast.Node) error {
	if n.Type() != ast.MappingType {
		return d.Client.UnmarshalYAML(n)
	}
	type plain disconnectSpec
	return yaml.NodeToValue(n, (*plain)(d), yaml.Strict())
}

// filterSpec is one topic filter with its subscription options.
type filterSpec struct {
	Topic             string `yaml:"topic"`
	QoS               int    `yaml:"qos"`
	NoLocal           bool   `yaml:"no_local"`
	RetainAsPublished bool   `yaml:"retain_as_published"`
	RetainHandling    int    `yaml:"retain_handling"`
	at                pos
}

// filterSpec is "FILTER" or a mapping with options.
func (f *filterSpec) UnmarshalYAML(n ast.Node) error {
	f.at = posOf(n)
	if n.Type() != ast.MappingType {
		return yaml.NodeToValue(n, &f.Topic)
	}
	type plain filterSpec
	return yaml.NodeToValue(n, (*plain)(f), yaml.Strict())
}

// subscribeSpec subscribes a client; As names the subscription for expect and
// unsubscribe (default: the first filter).
type subscribeSpec struct {
	Client         name          `yaml:"client"`
	As             string        `yaml:"as"`
	Filters        []*filterSpec `yaml:"filters"`
	QoS            *int          `yaml:"qos"`
	Identifier     int           `yaml:"subscription_id"`
	UserProperties userProps     `yaml:"user_properties"`
}

type unsubSpec struct {
	Client       name `yaml:"client"`
	Subscription name `yaml:"subscription"`
}

// msgSpec is one message: topic, payload from one source, QoS, retain, properties.
type msgSpec struct {
	MsgBody `yaml:",inline"`
	at      pos
}

// MsgBody holds a message's fields, apart from msgSpec so that publishSpec can inline them
// without inheriting msgSpec's decoder.
type MsgBody struct {
	Topic           string    `yaml:"topic"`
	Payload         *string   `yaml:"payload"`
	File            *name     `yaml:"file"`
	Base64          *string   `yaml:"base64"`
	JSON            *value    `yaml:"json"`
	Msgpack         *value    `yaml:"msgpack"`
	QoS             *int      `yaml:"qos"`
	Retain          *bool     `yaml:"retain"`
	ContentType     string    `yaml:"content_type"`
	ResponseTopic   string    `yaml:"response_topic"`
	CorrelationData string    `yaml:"correlation_data"`
	PayloadFormat   int       `yaml:"payload_format"`
	MessageExpiry   duration  `yaml:"message_expiry"`
	UserProperties  userProps `yaml:"user_properties"`
}

func (m *msgSpec) UnmarshalYAML(n ast.Node) error {
	m.at = posOf(n)
	type plain msgSpec
	return yaml.NodeToValue(n, (*plain)(m), yaml.Strict())
}

// publishSpec publishes one message (the inline fields), a list (messages, each taking the
// inline fields as defaults), or the same message repeat times.
type publishSpec struct {
	Client   name       `yaml:"client"`
	Messages []*msgSpec `yaml:"messages"`
	Repeat   int        `yaml:"repeat"`
	Interval duration   `yaml:"interval"`
	body     MsgBody    // the inline message fields
	at       pos
}

// defaults returns the step's inline fields as a message.
func (p *publishSpec) defaults() *msgSpec { return &msgSpec{MsgBody: p.body, at: p.at} }

func (p *publishSpec) UnmarshalYAML(n ast.Node) error {
	p.at = posOf(n)
	// Strict decoding does not see through the inlined fields: check the keys here.
	if err := checkKeys(n, publishSpec{}, MsgBody{}); err != nil {
		return err
	}
	type plain publishSpec
	if err := yaml.NodeToValue(n, (*plain)(p)); err != nil {
		return err
	}
	return yaml.NodeToValue(n, &p.body)
}

// checkKeys reports the first key of mapping n that no yaml tag of the given structs names.
func checkKeys(n ast.Node, structs ...any) error {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		return nil // the decoder reports the wrong type
	}
	known := map[string]bool{}
	for _, s := range structs {
		t := reflect.TypeOf(s)
		for i := range t.NumField() {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			known[tag] = true
		}
	}
	for _, kv := range m.Values {
		if k := kv.Key.String(); !known[k] {
			return errAt(posOf(kv.Key), "unknown field %q", k)
		}
	}
	return nil
}

// matcher is a set of conditions one message must meet; empty fields are not checked.
type matcher struct {
	Topic           string        `yaml:"topic"`
	Payload         *string       `yaml:"payload"`
	Contains        *string       `yaml:"contains"`
	Regex           *name         `yaml:"regex"`
	JSON            yaml.MapSlice `yaml:"json"`
	Msgpack         *value        `yaml:"msgpack"`
	QoS             *int          `yaml:"qos"`
	Retain          *bool         `yaml:"retain"`
	ContentType     *string       `yaml:"content_type"`
	ResponseTopic   *string       `yaml:"response_topic"`
	CorrelationData *string       `yaml:"correlation_data"`
	UserProperties  userProps     `yaml:"user_properties"`
	at              pos
}

func (m *matcher) UnmarshalYAML(n ast.Node) error {
	m.at = posOf(n)
	type plain matcher
	return yaml.NodeToValue(n, (*plain)(m), yaml.Strict())
}

// expectSpec asserts what a subscription received.
type expectSpec struct {
	On           name       `yaml:"on"`
	Count        *int       `yaml:"count"`
	Min          *int       `yaml:"min"`
	Max          *int       `yaml:"max"`
	Within       duration   `yaml:"within"`
	Settle       duration   `yaml:"settle"`
	None         *duration  `yaml:"none"`
	Ordered      bool       `yaml:"ordered"`
	NoDuplicates bool       `yaml:"no_duplicates"`
	All          *matcher   `yaml:"all"`
	Messages     []*matcher `yaml:"messages"`
}

// sessionSpec registers a persistent session with filters (connect with Clean Start 0,
// subscribe, disconnect leaving the session) or releases one (ends it at the broker).
type sessionSpec struct {
	Client   name          `yaml:"client"`
	As       string        `yaml:"as"`
	Register []*filterSpec `yaml:"register"`
	Release  bool          `yaml:"release"`
}
