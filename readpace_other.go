//go:build !linux

package tern

import "net"

// lowWaterSetter: read coalescing relies on how Linux wakes a reader by SO_RCVLOWAT; other
// systems read every packet as it arrives.
func lowWaterSetter(net.Conn) (func(int) error, int) { return nil, 0 }
