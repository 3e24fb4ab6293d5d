//go:build !race

package packet

const poisonReleased = false
