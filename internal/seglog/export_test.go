package seglog

// Internals the external tests need.
var AppendRecord = appendRecord

const (
	HeaderSize = headerSize
	MinLen     = minLen
)
