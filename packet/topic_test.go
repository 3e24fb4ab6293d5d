package packet

import (
	"errors"
	"strings"
	"testing"
)

func TestValidString(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		s    string
		want error
	}{
		{"empty", "", nil},
		{"ascii", "hello/world", nil},
		{"multibyte", "caf\u00e9/\u2603/\U0001F600", nil},
		{"bom-kept", "\uFEFFx", nil}, // U+FEFF is a character like any other [MQTT-1.5.4-3]
		{"max-length", strings.Repeat("a", 65535), nil},
		{"too-long", strings.Repeat("a", 65536), ErrFieldTooLong},
		{"too-long-and-bad", strings.Repeat("\xff", 65536), ErrFieldTooLong},
		{"bad-byte", "a\xffb", ErrInvalidUTF8},
		{"cut-sequence", "a\xe2\x98", ErrInvalidUTF8},
		{"surrogate", "a\xed\xa0\x80", ErrInvalidUTF8},
		{"overlong-slash", "\xc0\xaf", ErrInvalidUTF8},
		{"above-max-rune", "\xf4\x90\x80\x80", ErrInvalidUTF8},
		{"nul", "a\x00b", ErrNullChar},
		{"nul-only", "\x00", ErrNullChar},
	}
	for _, c := range cases {
		if err := ValidString(c.s); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: ValidString = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestValidateTopicName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		topic string
		want  error
	}{
		{"a", nil},
		{"a/b/c", nil},
		{"/", nil},
		{"/finance", nil},
		{"a//b", nil},
		{"Accounts payable", nil},
		{"$SYS/broker/load", nil},
		{"$share/g/a", nil}, // only a filter has a shared form; as a name it is just a topic
		{"\u00fcber/\u2603", nil},
		{strings.Repeat("t", 65535), nil},
		{"", ErrEmptyTopic},
		{"a/+", ErrWildcardInTopic},
		{"+", ErrWildcardInTopic},
		{"a/#", ErrWildcardInTopic},
		{"a#b", ErrWildcardInTopic},
		{"a\x00", ErrNullChar},
		{"a\xff", ErrInvalidUTF8},
		{"\xed\xbf\xbf", ErrInvalidUTF8},
		{strings.Repeat("t", 65536), ErrFieldTooLong},
	}
	for _, c := range cases {
		if err := ValidateTopicName(c.topic); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("ValidateTopicName(%.20q) = %v, want %v", c.topic, err, c.want)
		}
	}
}

func TestValidateTopicFilter(t *testing.T) {
	t.Parallel()
	cases := []struct {
		filter string
		want   error
	}{
		{"a", nil},
		{"a/b", nil},
		{"#", nil},
		{"+", nil},
		{"/", nil},
		{"a/#", nil},
		{"a/+/b", nil},
		{"+/+", nil},
		{"/+", nil},
		{"+/tennis/#", nil},
		{"sport/+/player1", nil},
		{"a//b", nil},
		{"$SYS/#", nil},
		{"$sharex/a", nil}, // not the $share/ prefix: an ordinary filter
		{"", ErrEmptyTopic},
		{"a/b#", ErrInvalidFilter},
		{"a/#/b", ErrInvalidFilter},
		{"#/", ErrInvalidFilter},
		{"##", ErrInvalidFilter},
		{"a+", ErrInvalidFilter},
		{"+a", ErrInvalidFilter},
		{"a/+b/c", ErrInvalidFilter},
		{"++", ErrInvalidFilter},
		{"a\x00", ErrNullChar},
		{"a/\xff", ErrInvalidUTF8},
		{strings.Repeat("f", 65536), ErrFieldTooLong},

		// Shared subscriptions: $share/{ShareName}/{filter} [MQTT-4.8.2-1], [MQTT-4.8.2-2].
		{"$share/group/a/b", nil},
		{"$share/g/#", nil},
		{"$share/g/+/x", nil},
		{"$share/g//finance", nil},
		{"$share/g/$SYS/#", nil},
		{"$share//a", ErrInvalidShare},   // empty share name
		{"$share/g+/a", ErrInvalidShare}, // + in the share name
		{"$share/+/a", ErrInvalidShare},
		{"$share/g#/a", ErrInvalidShare}, // # in the share name
		{"$share/#/a", ErrInvalidShare},
		{"$share/g", ErrInvalidShare},  // no inner filter
		{"$share/g/", ErrInvalidShare}, // empty inner filter
		{"$share/", ErrInvalidShare},
		{"$share", ErrInvalidShare},
		{"$share/g/a#", ErrInvalidFilter}, // the inner filter follows the usual rules
		{"$share/g/a/#/b", ErrInvalidFilter},
	}
	for _, c := range cases {
		if err := ValidateTopicFilter(c.filter); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("ValidateTopicFilter(%.20q) = %v, want %v", c.filter, err, c.want)
		}
	}
}

func TestSplitShared(t *testing.T) {
	t.Parallel()
	cases := []struct {
		filter, share, inner string
		ok                   bool
	}{
		{"$share/g/a/b", "g", "a/b", true},
		{"$share//a", "", "a", true},
		{"$share/g/", "g", "", true},
		{"$share/g", "", "", false},
		{"$share", "", "", false},
		{"a/b", "", "", false},
		{"$SHARE/g/a", "", "", false}, // topics are case sensitive
	}
	for _, c := range cases {
		share, inner, ok := SplitShared(c.filter)
		if share != c.share || inner != c.inner || ok != c.ok {
			t.Errorf("SplitShared(%q) = %q, %q, %v; want %q, %q, %v",
				c.filter, share, inner, ok, c.share, c.inner, c.ok)
		}
	}
	if !HasWildcard("a/+") || !HasWildcard("#") || HasWildcard("a/b") {
		t.Error("HasWildcard: wrong answer")
	}
}

func TestMatchTopic(t *testing.T) {
	t.Parallel()
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/b", "a/b/", false},
		{"a/b/", "a/b", false},
		{"A", "a", false}, // case sensitive

		// Single-level wildcard.
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a", false}, // "sport/+" does not match "sport"
		{"a/+", "a/", true}, // ... but does match "sport/": + matches an empty level
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"a/+/c", "a//c", true}, // empty level in the middle
		{"+/b", "/b", true},
		{"+", "a", true},
		{"+/+/+", "a/b", false},
		{"sport/tennis/+", "sport/tennis/player1", true},
		{"sport/tennis/+", "sport/tennis/player1/ranking", false},

		// Multi-level wildcard.
		{"#", "a", true},
		{"#", "a/b/c", true},
		{"#", "/", true},
		{"a/#", "a", true}, // # includes the parent level
		{"a/#", "a/", true},
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"a/#", "b/a", false},
		{"a/b/#", "a", false},
		{"+/#", "a", true},
		{"+/b/#", "a/b", true},
		{"sport/tennis/player1/#", "sport/tennis/player1", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},

		// Topics beginning with $ [MQTT-4.7.2-1].
		{"#", "$SYS/monitor", false},
		{"+/monitor/Clients", "$SYS/monitor/Clients", false},
		{"+", "$SYS", false},
		{"$SYS/#", "$SYS/monitor/Clients", true},
		{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
		{"$SYS", "$SYS", true},
		{"a/+", "a/$b", true}, // only a leading $ is special

		// A shared filter matches as its inner filter.
		{"$share/g/a/+", "a/b", true},
		{"$share/g/#", "x/y", true},
		{"$share/g/#", "$SYS/x", false},
		{"$share/consumer1//finance", "/finance", true},
		{"$share/g/a/b", "$share/g/a/b", false},
	}
	for _, c := range cases {
		if got := MatchTopic(c.filter, c.topic); got != c.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}
