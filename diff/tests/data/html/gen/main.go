package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"time"
)

var sink int
var ssink string

type item struct {
	name  string
	owner string
	vals  []int
}

//go:noinline
func parseItem(i int) item {
	it := item{name: "pod-" + string(rune('a'+i%26)), owner: "rs-" + string(rune('a'+i%7))}
	for k := 0; k < 40; k++ {
		it.vals = append(it.vals, (i*31+k*17)%97)
	}
	return it
}

//go:noinline
func hashItem(it item) int {
	h := 0
	for r := 0; r < 30; r++ {
		for _, v := range it.vals {
			h = h*31 + v
		}
		for _, c := range it.name {
			h = h*17 + int(c)
		}
	}
	return h
}

//go:noinline
func sortVals(it item) {
	v := append([]int(nil), it.vals...)
	sort.Ints(v)
	sink += v[0]
}

//go:noinline
func auditTrail(it item, slow bool) {
	if !slow {
		sink += len(it.name)
		return
	}
	var b strings.Builder
	for k := 0; k < 6; k++ {
		b.WriteString(fmt.Sprintf("audit %s owner=%s k=%d v=%v", it.name, it.owner, k, it.vals[:8]))
	}
	ssink = b.String()
}

//go:noinline
func reconcile(i int, slow bool) {
	it := parseItem(i)
	sink += hashItem(it)
	sortVals(it)
	auditTrail(it, slow)
}

func main() {
	out := flag.String("o", "cpu.pb.gz", "")
	dur := flag.Duration("d", 2*time.Second, "")
	slow := flag.Bool("slow", false, "")
	flag.Parse()
	f, _ := os.Create(*out)
	pprof.StartCPUProfile(f)
	end := time.Now().Add(*dur)
	for i := 0; time.Now().Before(end); i++ {
		reconcile(i, *slow)
	}
	pprof.StopCPUProfile()
	f.Close()
}
