//go:build !race

package rawmqtt

const raceEnabled = false
