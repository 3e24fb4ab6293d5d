package packet

import (
	"errors"
	"strings"
)

// Validation errors for fields a client is about to send. They name the field's problem; the
// caller adds which field.
var (
	ErrFieldTooLong      = errors.New("packet: field longer than 65535 bytes")
	ErrInvalidUTF8       = errors.New("packet: string is not well-formed UTF-8")
	ErrNullChar          = errors.New("packet: string contains U+0000")
	ErrEmptyTopic        = errors.New("packet: topic is empty")
	ErrWildcardInTopic   = errors.New("packet: topic name contains a wildcard")
	ErrInvalidFilter     = errors.New("packet: invalid topic filter")
	ErrInvalidShare      = errors.New("packet: invalid shared subscription")
	ErrInvalidQoS        = errors.New("packet: QoS must be 0, 1 or 2")
	ErrMissingPacketID   = errors.New("packet: packet identifier must be non-zero")
	ErrInvalidProperty   = errors.New("packet: invalid property value")
	ErrEmptySubscription = errors.New("packet: SUBSCRIBE and UNSUBSCRIBE need at least one filter")
)

// ValidateTopicName checks a topic name for PUBLISH: non-empty [MQTT-4.7.3-1], valid UTF-8
// without U+0000 [MQTT-4.7.3-2], at most 65535 bytes [MQTT-4.7.3-3], and free of the wildcard
// characters + and # [MQTT-3.3.2-2].
func ValidateTopicName(topic string) error {
	if topic == "" {
		return ErrEmptyTopic
	}
	if err := ValidString(topic); err != nil {
		return err
	}
	if strings.ContainsAny(topic, "+#") {
		return ErrWildcardInTopic
	}
	return nil
}

// ValidateTopicFilter checks a topic filter for SUBSCRIBE or UNSUBSCRIBE, including the
// $share/{ShareName}/{filter} form.
func ValidateTopicFilter(filter string) error {
	if filter == "" {
		return ErrEmptyTopic
	}
	if err := ValidString(filter); err != nil {
		return err
	}
	if share, inner, ok := SplitShared(filter); ok {
		// [MQTT-4.8.2-1] The ShareName is at least one character long;
		// [MQTT-4.8.2-2] it contains none of "/", "+" or "#".
		if share == "" || strings.ContainsAny(share, "+#") {
			return ErrInvalidShare
		}
		if inner == "" {
			return ErrInvalidShare
		}
		filter = inner
	} else if strings.HasPrefix(filter, "$share/") || filter == "$share" {
		return ErrInvalidShare
	}
	return checkWildcards(filter)
}

func checkWildcards(filter string) error {
	for i := 0; i < len(filter); i++ {
		switch filter[i] {
		case '#':
			// [MQTT-4.7.1-1] The multi-level wildcard is the last character and stands alone
			// in its level (or alone in the filter).
			if i != len(filter)-1 || (i > 0 && filter[i-1] != '/') {
				return ErrInvalidFilter
			}
		case '+':
			// [MQTT-4.7.1-2] The single-level wildcard occupies a whole level.
			if (i > 0 && filter[i-1] != '/') || (i < len(filter)-1 && filter[i+1] != '/') {
				return ErrInvalidFilter
			}
		}
	}
	return nil
}

// SplitShared splits a shared subscription filter "$share/{ShareName}/{filter}" into its share
// name and inner filter. ok is false when filter is not in that form.
func SplitShared(filter string) (share, inner string, ok bool) {
	rest, found := strings.CutPrefix(filter, "$share/")
	if !found {
		return "", "", false
	}
	share, inner, found = strings.Cut(rest, "/")
	if !found {
		return "", "", false
	}
	return share, inner, true
}

// HasWildcard reports whether a filter contains + or #.
func HasWildcard(filter string) bool { return strings.ContainsAny(filter, "+#") }

// MatchTopic reports whether topic name matches filter (MQTT 5 §4.7). Topics starting with $
// are not matched by a filter starting with a wildcard [MQTT-4.7.2-1].
func MatchTopic(filter, topic string) bool {
	if _, inner, ok := SplitShared(filter); ok {
		filter = inner
	}
	if len(topic) > 0 && topic[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		if filter == "#" {
			return true
		}
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			if fmore {
				// "a/#" also matches "a": # stands for the parent level too.
				return frest == "#"
			}
			return !tmore
		}
		filter, topic = frest, trest
	}
}
