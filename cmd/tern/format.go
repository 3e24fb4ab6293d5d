package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ternmq/tern"
)

// printer appends the output line of one message to dst.
type printer func(dst []byte, m *tern.Message, now time.Time) []byte

// printer returns the output form the flags ask for.
func (f *subFlags) printer(stderr io.Writer) (printer, error) {
	n := 0
	for _, b := range []bool{f.verbose, f.format != "", f.json} {
		if b {
			n++
		}
	}
	if n > 1 {
		return nil, usagef("give only one of -v, -F and --json")
	}
	switch {
	case f.json:
		return printJSON, nil
	case f.format != "":
		return compileFormat(f.format, stderr)
	case f.verbose:
		return func(dst []byte, m *tern.Message, _ time.Time) []byte {
			dst = append(dst, m.Topic...)
			dst = append(dst, ' ')
			dst = append(dst, m.Payload...)
			return append(dst, '\n')
		}, nil
	}
	return func(dst []byte, m *tern.Message, _ time.Time) []byte {
		dst = append(dst, m.Payload...)
		return append(dst, '\n')
	}, nil
}

// compileFormat parses a -F format once. It knows mosquitto_sub's common sequences:
//
//	%% %t %p %q %r %l %m %x %X %C %R %E %F %P %D %S %A %I %U %j %J
//	@@ @Y @m @d @H @M @S @s @N @z    (a subset of strftime)
//	\\ \0 \a \e \n \r \t \v
//
// Width and precision flags are not supported. A newline ends every message, as
// mosquitto_sub prints it. %J, like mosquitto_sub's, prints the payload as JSON (compacted)
// and needs it to be JSON: for a payload that is not, it prints nothing and writes an error
// to stderr.
func compileFormat(format string, stderr io.Writer) (printer, error) {
	type step func(dst []byte, m *tern.Message, now time.Time) []byte
	var steps []step
	rawJSON := func(d []byte, m *tern.Message, now time.Time) []byte {
		out, ok := appendMosquittoJSONRaw(d, m, now)
		if !ok {
			fmt.Fprintf(stderr, "Error: Message payload is not valid JSON on topic %s.\n", m.Topic)
		}
		return out
	}
	lit := func(s string) step {
		return func(dst []byte, _ *tern.Message, _ time.Time) []byte { return append(dst, s...) }
	}
	for i := 0; i < len(format); i++ {
		ch := format[i]
		if ch != '%' && ch != '@' && ch != '\\' {
			j := i
			for j < len(format) && format[j] != '%' && format[j] != '@' && format[j] != '\\' {
				j++
			}
			steps = append(steps, lit(format[i:j]))
			i = j - 1
			continue
		}
		if i+1 >= len(format) {
			return nil, usagef("-F %q: %c at the end", format, ch)
		}
		i++
		var s step
		switch {
		case ch == '%' && format[i] == 'J':
			s = rawJSON
		case ch == '%':
			s = percentToken(format[i])
		case ch == '@':
			s = timeToken(format[i])
		case ch == '\\':
			s = escapeToken(format[i])
		}
		if s == nil {
			return nil, usagef("-F %q: unknown sequence %c%c", format, ch, format[i])
		}
		steps = append(steps, s)
	}
	return func(dst []byte, m *tern.Message, now time.Time) []byte {
		for _, s := range steps {
			dst = s(dst, m, now)
		}
		return append(dst, '\n')
	}, nil
}

func percentToken(c byte) func([]byte, *tern.Message, time.Time) []byte {
	switch c {
	case '%':
		return func(d []byte, _ *tern.Message, _ time.Time) []byte { return append(d, '%') }
	case 't':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return append(d, m.Topic...) }
	case 'p':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return append(d, m.Payload...) }
	case 'q':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return strconv.AppendUint(d, uint64(m.QoS), 10) }
	case 'r':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return append(d, bit(m.Retain)) }
	case 'l':
		return func(d []byte, m *tern.Message, _ time.Time) []byte {
			return strconv.AppendInt(d, int64(len(m.Payload)), 10)
		}
	case 'm':
		return func(d []byte, m *tern.Message, _ time.Time) []byte {
			return strconv.AppendUint(d, uint64(m.PacketID), 10)
		}
	case 'x':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return hex.AppendEncode(d, m.Payload) }
	case 'X':
		return func(d []byte, m *tern.Message, _ time.Time) []byte {
			return append(d, strings.ToUpper(hex.EncodeToString(m.Payload))...)
		}
	case 'C':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return append(d, m.ContentType...) }
	case 'R':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return append(d, m.ResponseTopic...) }
	case 'D':
		return func(d []byte, m *tern.Message, _ time.Time) []byte { return append(d, m.CorrelationData...) }
	case 'E':
		return func(d []byte, m *tern.Message, _ time.Time) []byte {
			if m.MessageExpiry == 0 {
				return d
			}
			return strconv.AppendUint(d, uint64(m.MessageExpiry), 10)
		}
	case 'F':
		return func(d []byte, m *tern.Message, _ time.Time) []byte {
			if m.PayloadFormat == 0 {
				return d
			}
			return strconv.AppendUint(d, uint64(m.PayloadFormat), 10)
		}
	case 'P':
		return func(d []byte, m *tern.Message, _ time.Time) []byte {
			for i, up := range m.UserProperties {
				if i > 0 {
					d = append(d, ' ')
				}
				d = append(append(append(d, up.Key...), ':'), up.Value...)
			}
			return d
		}
	case 'S':
		return func(d []byte, m *tern.Message, _ time.Time) []byte {
			for i, id := range m.SubscriptionIDs {
				if i > 0 {
					d = append(d, ' ')
				}
				d = strconv.AppendUint(d, uint64(id), 10)
			}
			return d
		}
	case 'A':
		// The client resolves inbound topic aliases before delivery; the alias itself is
		// not kept, so %A is always empty.
		return func(d []byte, _ *tern.Message, _ time.Time) []byte { return d }
	case 'I':
		return func(d []byte, _ *tern.Message, now time.Time) []byte {
			return now.AppendFormat(d, "2006-01-02T15:04:05-0700")
		}
	case 'U':
		return func(d []byte, _ *tern.Message, now time.Time) []byte {
			return fmt.Appendf(d, "%d.%09d", now.Unix(), now.Nanosecond())
		}
	case 'j':
		return func(d []byte, m *tern.Message, now time.Time) []byte {
			return appendMosquittoJSON(d, m, now)
		}
	}
	return nil
}

func bit(b bool) byte {
	if b {
		return '1'
	}
	return '0'
}

func timeToken(c byte) func([]byte, *tern.Message, time.Time) []byte {
	layouts := map[byte]string{'Y': "2006", 'm': "01", 'd': "02", 'H': "15", 'M': "04", 'S': "05", 'z': "-0700"}
	if l, ok := layouts[c]; ok {
		return func(d []byte, _ *tern.Message, now time.Time) []byte { return now.AppendFormat(d, l) }
	}
	switch c {
	case '@':
		return func(d []byte, _ *tern.Message, _ time.Time) []byte { return append(d, '@') }
	case 's':
		return func(d []byte, _ *tern.Message, now time.Time) []byte { return strconv.AppendInt(d, now.Unix(), 10) }
	case 'N':
		return func(d []byte, _ *tern.Message, now time.Time) []byte { return fmt.Appendf(d, "%09d", now.Nanosecond()) }
	}
	return nil
}

func escapeToken(c byte) func([]byte, *tern.Message, time.Time) []byte {
	m := map[byte]byte{'\\': '\\', '0': 0, 'a': '\a', 'e': 0x1b, 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v'}
	b, ok := m[c]
	if !ok {
		return nil
	}
	return func(d []byte, _ *tern.Message, _ time.Time) []byte { return append(d, b) }
}

// appendMosquittoJSONRaw is %J: %j with the payload as JSON itself rather than a string,
// compacted (mosquitto_sub re-serialises it; numbers here keep the form they were sent in).
// ok is false, and d unchanged, when the payload is not JSON. An empty payload is null.
func appendMosquittoJSONRaw(d []byte, m *tern.Message, now time.Time) ([]byte, bool) {
	if len(m.Payload) > 0 && !json.Valid(m.Payload) {
		return d, false
	}
	return appendJSONLine(d, m, now, true), true
}

// appendMosquittoJSON is %j: mosquitto_sub's JSON form, field for field: tst (local time
// with microseconds, then a literal Z and the zone offset, as mosquitto_sub writes it), topic,
// qos, retain, payloadlen, mid (QoS 1 and 2), the MQTT 5 properties present, and payload.
// The subscription identifiers Tern sets itself are left out: mosquitto_sub sets none.
func appendMosquittoJSON(d []byte, m *tern.Message, now time.Time) []byte {
	return appendJSONLine(d, m, now, false)
}

// appendJSONLine is %j, or %J with raw set (the payload, known to be JSON, compacted).
func appendJSONLine(d []byte, m *tern.Message, now time.Time, raw bool) []byte {
	str := func(s string) []byte {
		b, _ := json.Marshal(s) // a string: cannot fail
		return b
	}
	d = append(d, `{"tst":`...)
	d = append(d, str(now.Format("2006-01-02T15:04:05.000000Z-0700"))...)
	d = append(d, `,"topic":`...)
	d = append(d, str(m.Topic)...)
	d = fmt.Appendf(d, `,"qos":%d,"retain":%c,"payloadlen":%d`, m.QoS, bit(m.Retain), len(m.Payload))
	if m.QoS > 0 {
		d = fmt.Appendf(d, `,"mid":%d`, m.PacketID)
	}
	// In the order Mosquitto forwards them, so a message through Mosquitto prints as with
	// mosquitto_sub.
	var props [][]byte
	if m.ContentType != "" {
		props = append(props, append([]byte(`"content-type":`), str(m.ContentType)...))
	}
	if len(m.UserProperties) > 0 {
		up := []byte(`"user-properties":{`)
		for i, p := range m.UserProperties {
			if i > 0 {
				up = append(up, ',')
			}
			up = append(up, str(p.Key)...)
			up = append(up, ':')
			up = append(up, str(p.Value)...)
		}
		props = append(props, append(up, '}'))
	}
	if m.CorrelationData != nil {
		props = append(props, append([]byte(`"correlation-data":`), str(string(m.CorrelationData))...))
	}
	if m.ResponseTopic != "" {
		props = append(props, append([]byte(`"response-topic":`), str(m.ResponseTopic)...))
	}
	if m.PayloadFormat != 0 {
		props = append(props, fmt.Appendf(nil, `"payload-format-indicator":%d`, m.PayloadFormat))
	}
	if m.MessageExpiry != 0 {
		props = append(props, fmt.Appendf(nil, `"message-expiry-interval":%d`, m.MessageExpiry))
	}
	if len(props) > 0 {
		d = append(d, `,"properties":{`...)
		for i, p := range props {
			if i > 0 {
				d = append(d, ',')
			}
			d = append(d, p...)
		}
		d = append(d, '}')
	}
	d = append(d, `,"payload":`...)
	switch {
	case len(m.Payload) == 0:
		d = append(d, "null"...) // as mosquitto_sub prints an empty payload
	case raw:
		var b bytes.Buffer
		json.Compact(&b, m.Payload) // valid: checked by the caller
		d = append(d, b.Bytes()...)
	default:
		d = append(d, str(string(m.Payload))...)
	}
	return append(d, '}')
}

// jsonMessage is one line of --json output. Absent properties are omitted; binary fields
// are UTF-8 text when they are valid UTF-8, base64 otherwise, as their _encoding field says.
type jsonMessage struct {
	Time                    string         `json:"time"`
	Topic                   string         `json:"topic"`
	QoS                     byte           `json:"qos"`
	Retain                  bool           `json:"retain"`
	Dup                     bool           `json:"dup"`
	PacketID                uint16         `json:"packet_id,omitempty"`
	PayloadFormat           *byte          `json:"payload_format,omitempty"`
	MessageExpiry           *uint32        `json:"message_expiry,omitempty"`
	ContentType             string         `json:"content_type,omitempty"`
	ResponseTopic           string         `json:"response_topic,omitempty"`
	CorrelationData         *string        `json:"correlation_data,omitempty"`
	CorrelationDataEncoding string         `json:"correlation_data_encoding,omitempty"`
	SubscriptionIDs         []uint32       `json:"subscription_ids,omitempty"`
	UserProperties          []jsonProperty `json:"user_properties,omitempty"`
	Payload                 string         `json:"payload"`
	PayloadEncoding         string         `json:"payload_encoding"`
}

// jsonProperty is one user property; a list keeps their order and repeats.
type jsonProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// textOrBase64 returns b as text when it is valid UTF-8, else as base64, and which.
func textOrBase64(b []byte) (string, string) {
	if utf8.Valid(b) {
		return string(b), "utf8"
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func printJSON(dst []byte, m *tern.Message, now time.Time) []byte {
	j := jsonMessage{
		Time: now.UTC().Format(time.RFC3339Nano), Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Dup: m.Dup,
		PacketID: m.PacketID, ContentType: m.ContentType, ResponseTopic: m.ResponseTopic,
		SubscriptionIDs: m.SubscriptionIDs,
	}
	if m.PayloadFormat != 0 {
		j.PayloadFormat = &m.PayloadFormat
	}
	if m.MessageExpiry != 0 {
		j.MessageExpiry = &m.MessageExpiry
	}
	if m.CorrelationData != nil {
		s, enc := textOrBase64(m.CorrelationData)
		j.CorrelationData, j.CorrelationDataEncoding = &s, enc
	}
	for _, up := range m.UserProperties {
		j.UserProperties = append(j.UserProperties, jsonProperty{up.Key, up.Value})
	}
	j.Payload, j.PayloadEncoding = textOrBase64(m.Payload)
	b, _ := json.Marshal(&j) // strings, numbers and lists only: cannot fail
	return append(append(dst, b...), '\n')
}
