package config

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// unknownKeysDoc is a file with n unknown top-level keys (short names, so
// that 100,000 of them stay under the size limit).
func unknownKeysDoc(n int) []byte {
	var b strings.Builder
	b.WriteString("database: {url: " + testURL + "}\n")
	for i := range n {
		b.WriteString("k")
		b.WriteString(strconv.FormatInt(int64(i), 36))
		b.WriteString(": 1\n")
	}
	return []byte(b.String())
}

// nestedDoc is a file whose unknown key nests depth mappings deep.
func nestedDoc(depth int) []byte {
	return []byte("database: {url: " + testURL + "}\n" + strings.Repeat("a: {", depth-1) + "a: 1" + strings.Repeat("}", depth-1) + "\n")
}

// BenchmarkLoadUnknownKeys shows that the loader is linear in the number
// of keys: ns/op should grow tenfold per tenfold of keys.
func BenchmarkLoadUnknownKeys(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		doc := unknownKeysDoc(n)
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				if _, err := LoadBytes(doc, nil); err == nil {
					b.Fatal("unknown keys loaded without error")
				}
			}
		})
	}
}

// BenchmarkLoadNesting loads a shallow document and one nested as deep as
// the loader accepts.
func BenchmarkLoadNesting(b *testing.B) {
	for _, depth := range []int{8, MaxConfigDepth} {
		doc := nestedDoc(depth)
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			for b.Loop() {
				if _, err := LoadBytes(doc, nil); err == nil {
					b.Fatal("unknown key loaded without error")
				}
			}
		})
	}
}
