// Package packet encodes and decodes MQTT 5 control packets.
//
// It is a codec only: no goroutines, no network, no policy. Every packet type has a struct
// with an AppendTo method that appends the encoded packet to a caller's buffer (sizing the
// Remaining Length first, so nothing is encoded twice), a Len method, and a Decode method
// that fills the struct from a packet body and checks every rule the specification gives for
// it. Decode errors are *Error values carrying the reason code the receiver must send in
// DISCONNECT; errors.Is(err, ErrMalformed) and errors.Is(err, ErrProtocol) tell the classes
// apart.
//
// Reader reads packets off a stream into pooled buffers and refuses a packet larger than its
// limit before allocating for it. Publish.Decode does not copy: the topic, payload and
// property strings point into the frame, and are valid until the frame is released. Under
// the race detector released buffers are overwritten, so a use after release shows up in
// tests.
//
// Validate methods check what a sender must check before a packet goes on the wire (topic
// names and filters, UTF-8, sizes). AppendTo does not validate, so the hot path pays for
// checks once, where the data enters the program.
package packet
