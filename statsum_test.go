package tern

import (
	"reflect"
	"testing"
)

// Stats.add, which folds the publisher pool's counters into the parent's, must cover every
// counter, so one added later is not silently left out; gauges are the parent's own.
func TestStatsAddCoversEveryCounter(t *testing.T) {
	gauges := map[string]bool{"InFlight": true, "Subscriptions": true}
	var one Stats
	v := reflect.ValueOf(&one).Elem()
	for i := range v.NumField() {
		v.Field(i).SetUint(1)
	}
	var sum Stats
	sum.add(one)
	sv := reflect.ValueOf(sum)
	for i := range sv.NumField() {
		name := sv.Type().Field(i).Name
		if want := uint64(1); !gauges[name] && sv.Field(i).Uint() != want {
			t.Errorf("Stats.add leaves out %s", name)
		}
		if gauges[name] && sv.Field(i).Uint() != 0 {
			t.Errorf("Stats.add adds the gauge %s", name)
		}
	}
}
