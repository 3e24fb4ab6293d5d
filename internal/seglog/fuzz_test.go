package seglog

import (
	"bytes"
	"testing"
)

// FuzzScan feeds arbitrary segment bytes to the record reader: it must never panic, always
// make progress, and only return records that encode back to exactly the bytes read.
func FuzzScan(f *testing.F) {
	var seg []byte
	seg = appendRecord(seg, 1, 1, []byte("hello"))
	seg = appendRecord(seg, 1, 2, nil)
	seg = appendRecord(seg, 2, 7, bytes.Repeat([]byte{0xAB}, 300))
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add(append(bytes.Clone(seg[:20]), seg...))
	f.Add(make([]byte, 64))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sc := scanner{maxLen: 1 << 16, maxVer: 2}
		sc.reset(bytes.NewReader(data))
		limit := int64(len(data))
		for off := int64(0); off < limit; {
			rec, bad, err := sc.next(off, limit)
			if err != nil {
				t.Fatalf("offset %d: %v", off, err)
			}
			if bad != nil {
				if bad.off != off || bad.end <= off || bad.end > limit {
					t.Fatalf("bad region %+v at offset %d", bad, off)
				}
				off = bad.end
				continue
			}
			again := appendRecord(nil, rec.Version, rec.Type, rec.Payload)
			if !bytes.Equal(again, data[off:off+rec.Size]) {
				t.Fatalf("offset %d: record does not encode back to its bytes", off)
			}
			off += rec.Size
		}
	})
}
