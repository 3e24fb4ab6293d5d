package packet

import (
	"errors"
	"io"
)

// errNothingToSkip is returned by SkipTooLarge when the last ReadFrame did not refuse a
// packet for its size.
var errNothingToSkip = errors.New("packet: no oversized packet to skip")

// TooLarge returns the fixed header byte of the packet the last ReadFrame refused with
// ErrTooLarge, and false if it refused none (or it was skipped already).
func (r *Reader) TooLarge() (byte, bool) { return r.over.header, r.over.header != 0 }

// SkipTooLarge moves past the packet the last ReadFrame refused with ErrTooLarge, whose
// fixed header was read and whose body was not, so that the stream can go on. It returns
// the packet's fixed header byte and the first keep bytes of its body (fewer if the body is
// shorter); the rest is read and discarded in the reader's buffer, without holding it.
//
// It serves a peer that cannot be told the limit (MQTT 3.1.1 has no Maximum Packet Size):
// the caller reads what it needs from the start of the body (a PUBLISH's topic and packet
// identifier) and acknowledges the packet instead of closing the connection, on which the
// peer would send the same packet again. Cost: one allocation of keep bytes at most.
func (r *Reader) SkipTooLarge(keep int) (byte, []byte, error) {
	h, body := r.over.header, r.over.body
	if h == 0 {
		return 0, nil, errNothingToSkip
	}
	r.over.header, r.over.body = 0, 0
	prefix := make([]byte, min(keep, body))
	if _, err := io.ReadFull(r.br, prefix); err != nil {
		return 0, nil, unexpected(err)
	}
	if _, err := io.CopyN(io.Discard, r.br, int64(body-len(prefix))); err != nil {
		return 0, nil, unexpected(err)
	}
	return h, prefix, nil
}
