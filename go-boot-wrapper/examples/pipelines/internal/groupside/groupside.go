// Package groupside groups the numbers 1..N by their remainder modulo 4 with a GroupByKey, then labels each group from
// two side inputs: a name per group (a map side input) and the sum of all numbers (a singleton side input).
//
// Each output line is "<group> name=<name> count=<count> sum=<sum> total=<total>", for example
// "r1 name=one count=25 sum=1225 total=5050" for N=100.
package groupside

import (
	"fmt"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"

	"recycler.dev/examples/pipelines/internal/pace"
)

func init() {
	register.Function1x2(groupOf)
	register.Function1x2(parseName)
	register.Function4x1(describe)
	register.Iter1[int]()
	register.Iter1[string]()
}

// groups is the number of groups; names has one entry per group.
const groups = 4

var names = []string{"r0=zero", "r1=one", "r2=two", "r3=three"}

// Config sizes the input.
type Config struct {
	// Elements is N: the input is the numbers 1..N (N >= 1).
	Elements int
	Pace     pace.Config
}

// Build adds the pipeline to s and returns its output lines, a PCollection<string>.
func Build(s beam.Scope, cfg Config) beam.PCollection {
	s = s.Scope("groupside")
	numbers := pace.Apply(s, cfg.Pace, beam.CreateList(s, numbersUpTo(cfg.Elements)))
	total := stats.Sum(s, numbers)
	nameByGroup := beam.ParDo(s, parseName, beam.CreateList(s, names))
	grouped := beam.GroupByKey(s, beam.ParDo(s, groupOf, numbers))
	return beam.ParDo(s, describe, grouped, beam.SideInput{Input: nameByGroup}, beam.SideInput{Input: total})
}

// Expected computes in plain Go, without Beam, the output lines Build produces for cfg.
func Expected(cfg Config) []string {
	count := map[string]int{}
	sum := map[string]int{}
	total := 0
	for _, n := range numbersUpTo(cfg.Elements) {
		g, _ := groupOf(n)
		count[g]++
		sum[g] += n
		total += n
	}
	var out []string
	for _, kv := range names {
		g, name, _ := strings.Cut(kv, "=")
		if count[g] > 0 {
			out = append(out, format(g, name, count[g], sum[g], total))
		}
	}
	return out
}

func numbersUpTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func groupOf(n int) (string, int) {
	return fmt.Sprintf("r%d", n%groups), n
}

func parseName(kv string) (string, string) {
	g, name, _ := strings.Cut(kv, "=")
	return g, name
}

// describe receives one group from the GroupByKey and both side inputs.
func describe(group string, values func(*int) bool, nameOf func(string) func(*string) bool, total int) string {
	count, sum := 0, 0
	var v int
	for values(&v) {
		count++
		sum += v
	}
	name := "?"
	var n string
	if nameOf(group)(&n) {
		name = n
	}
	return format(group, name, count, sum, total)
}

func format(group, name string, count, sum, total int) string {
	return fmt.Sprintf("%s name=%s count=%d sum=%d total=%d", group, name, count, sum, total)
}
