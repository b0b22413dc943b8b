package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/pprof"
	"sort"
	"strings"
	"time"
)

var mode = flag.String("mode", "base", "base|sprintf|regexp|quad|alloc|ten")
var out = flag.String("o", "cpu.pb.gz", "")
var dur = flag.Duration("d", 2*time.Second, "")

type Item struct {
	Name  string
	Owner string
	Val   []byte
}

var sink int
var ownerRe = regexp.MustCompile(`^team-[a-z]+$`)

//go:noinline
func hashItem(it *Item) {
	h := sha256.Sum256(it.Val)
	sink += int(h[0])
}

//go:noinline
func auditTrail(it *Item, i int) {
	if *mode == "sprintf" {
		for k := 0; k < 6; k++ {
			s := fmt.Sprintf("item=%s owner=%s k=%d i=%d v=%x", it.Name, it.Owner, k, i, it.Val[:8])
			sink += len(s)
		}
	} else {
		sink += len(it.Name) + i
	}
}

//go:noinline
func matchOwner(it *Item) bool {
	if *mode == "regexp" {
		re := regexp.MustCompile(`^team-[a-z]+$`)
		return re.MatchString(it.Owner)
	}
	return ownerRe.MatchString(it.Owner)
}

//go:noinline
func dedupe(items []*Item) int {
	n := 0
	if *mode == "quad" {
		for i := range items {
			dup := false
			for j := 0; j < i; j++ {
				if items[j].Name == items[i].Name {
					dup = true
					break
				}
			}
			if !dup {
				n++
			}
		}
		return n
	}
	seen := make(map[string]struct{}, len(items))
	for _, it := range items {
		if _, ok := seen[it.Name]; !ok {
			seen[it.Name] = struct{}{}
			n++
		}
	}
	return n
}

//go:noinline
func sortItems(items []*Item) {
	sort.Slice(items, func(a, b int) bool { return items[a].Name < items[b].Name })
	if *mode == "ten" {
		sort.Slice(items, func(a, b int) bool { return items[a].Owner < items[b].Owner })
	}
}

//go:noinline
func buildStatus(items []*Item) string {
	var b strings.Builder
	for _, it := range items[:20] {
		b.WriteString(it.Name)
		b.WriteByte(',')
	}
	if *mode == "alloc" {
		for _, it := range items {
			buf := make([]byte, 4096)
			copy(buf, it.Val)
			sink += int(buf[10])
		}
	}
	return b.String()
}

//go:noinline
func reconcile(items []*Item) {
	for i, it := range items {
		hashItem(it)
		auditTrail(it, i)
		if matchOwner(it) {
			sink++
		}
	}
	sink += dedupe(items)
	sortItems(items)
	sink += len(buildStatus(items))
}

func main() {
	flag.Parse()
	items := make([]*Item, 400)
	for i := range items {
		v := make([]byte, 256)
		for k := range v {
			v[k] = byte(i * k)
		}
		items[i] = &Item{Name: fmt.Sprintf("obj-%05d", (i*7919)%1000), Owner: "team-abc", Val: v}
	}
	f, _ := os.Create(*out)
	pprof.StartCPUProfile(f)
	end := time.Now().Add(*dur)
	for time.Now().Before(end) {
		reconcile(items)
		// reshuffle
		for i := range items {
			j := (i * 31) % len(items)
			items[i], items[j] = items[j], items[i]
		}
	}
	pprof.StopCPUProfile()
	f.Close()
}
