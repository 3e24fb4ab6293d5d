package tern

import (
	"errors"

	"github.com/ternmq/tern/packet"
)

var errOversizedStart = &packet.Error{Code: packet.MalformedPacket, Detail: "oversized PUBLISH with a malformed start"}

// skipOversized handles a packet the reader refused for its size when the connection
// speaks MQTT 3.1.1. At MQTT 5 the client's limit is in CONNECT and a broker that sends a
// larger packet breaks the protocol, so the connection closes. MQTT 3.1.1 has no way to
// tell the broker the limit: closing would only make the broker send the same message
// again on the next connection, for ever, and nothing else would get through. So an
// oversized PUBLISH is read past without being held, acknowledged (PUBACK, or PUBREC with
// the usual PUBCOMP to follow) as an MQTT 5 broker would have dropped it, counted in
// Stats().Oversized and logged at warn level with its topic. Any other oversized packet,
// or a PUBLISH whose start is malformed, still closes the connection.
//
// It reports whether the read loop may go on; err is the error to close with otherwise.
func (cn *conn) skipOversized(err error) (bool, error) {
	if cn.ver != packet.Version311 || !errors.Is(err, packet.ErrTooLarge) {
		return false, err
	}
	if h, ok := cn.r.TooLarge(); !ok || packet.Type(h>>4) != packet.PUBLISH {
		return false, err
	}
	// Skipping reads from the network: end the read batch first, as before any wait, so
	// the acknowledgements it holds leave now.
	cn.endBatch(true)
	// Enough for the longest topic and the packet identifier.
	h, prefix, serr := cn.r.SkipTooLarge(2 + 0xFFFF + 2)
	if serr != nil {
		return false, serr
	}
	cn.reads.Add(1)
	qos := int(h>>1) & 3
	if qos > 2 || len(prefix) < 2 {
		return false, errOversizedStart
	}
	end := 2 + (int(prefix[0])<<8 | int(prefix[1]))
	if qos > 0 {
		end += 2
	}
	if len(prefix) < end {
		return false, errOversizedStart
	}
	topic := string(prefix[2 : end-2*min(qos, 1)])
	c := cn.c
	if s := c.st; s != nil {
		s.Oversized.Add(1)
	}
	c.log.Warn("tern: message above the maximum packet size skipped and acknowledged (MQTT 3.1.1 cannot tell the broker the limit; raise WithMaximumPacketSize to receive such messages)",
		"topic", topic, "qos", qos)
	if qos == 0 {
		return true, nil
	}
	kind := packet.PUBACK
	if qos == 2 {
		kind = packet.PUBREC
	}
	id := uint16(prefix[end-2])<<8 | uint16(prefix[end-1])
	ack := packet.Ack{Version: cn.ver, Kind: kind, PacketID: id}
	var b [8]byte
	if werr := cn.w.sendUrgent(ack.AppendTo(b[:0])); werr != nil {
		return false, werr
	}
	return true, nil
}
