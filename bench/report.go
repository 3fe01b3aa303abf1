package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// report collects every measurement of a run.
type report struct {
	Date         string    `json:"date"`
	CPUs         int       `json:"cpus"`
	CPUModel     string    `json:"cpu_model"`
	Kernel       string    `json:"kernel"`
	Quick        bool      `json:"quick"`
	Reps         int       `json:"repetitions"`
	DatasetBytes int64     `json:"dataset_bytes"`
	Results      []*result `json:"results"`
	Ratios       []ratio   `json:"ratios"`
	Limits       []limit   `json:"limits,omitempty"`
	Skipped      []string  `json:"skipped,omitempty"`
	Seconds      float64   `json:"seconds"`
}

// result is one contender's measurements of one workload: Values[i] was
// taken in repetition Reps[i].
type result struct {
	Workload     string    `json:"workload"`
	Contender    string    `json:"contender"`
	Unit         string    `json:"unit"`
	HigherBetter bool      `json:"higher_is_better"`
	Reps         []int     `json:"reps"`
	Values       []float64 `json:"values"`
	Median       float64   `json:"median"`
}

// at returns the value measured in repetition r.
func (x *result) at(r int) (float64, bool) {
	for i, rr := range x.Reps {
		if rr == r {
			return x.Values[i], true
		}
	}
	return 0, false
}

// ratio compares ours with a peer repetition by repetition, oriented so
// that > 1 means we do better: the median of the per-repetition ratios, and
// their spread. Target is the goal from the issues (0 when there is none).
type ratio struct {
	Workload string    `json:"workload"`
	Ours     string    `json:"ours"`
	Peer     string    `json:"peer"`
	Pairs    []float64 `json:"pairs"`
	Ratio    float64   `json:"ratio"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
	Target   float64   `json:"target,omitempty"`
	Issue    string    `json:"issue,omitempty"`
	Met      *bool     `json:"met,omitempty"`
}

// limit is an absolute goal on a median (lower is better): Max in Unit.
type limit struct {
	Workload  string  `json:"workload"`
	Contender string  `json:"contender"`
	Median    float64 `json:"median"`
	Max       float64 `json:"max"`
	Unit      string  `json:"unit"`
	Issue     string  `json:"issue"`
	Met       bool    `json:"met"`
}

// add records value v of contender in repetition rep.
func (r *report) add(workload, contender, unit string, rep int, v float64, higherBetter bool) {
	x := r.get(workload, contender)
	if x == nil {
		x = &result{Workload: workload, Contender: contender, Unit: unit, HigherBetter: higherBetter}
		r.Results = append(r.Results, x)
	}
	x.Reps = append(x.Reps, rep)
	x.Values = append(x.Values, v)
	x.Median = median(x.Values)
}

func (r *report) skip(what, why string) {
	msg := what + ": " + strings.TrimSpace(why)
	for _, s := range r.Skipped {
		if s == msg {
			return
		}
	}
	fmt.Printf("\n  skipped %s\n", msg)
	r.Skipped = append(r.Skipped, msg)
}

func (r *report) get(workload, contender string) *result {
	for _, x := range r.Results {
		if x.Workload == workload && x.Contender == contender {
			return x
		}
	}
	return nil
}

// targets are the goals the issues set: ours vs peer, paired median ratio
// at least target (for lower-is-better units the ratio is peer/ours). A
// target of 0 reports the ratio without a goal.
var targets = []struct {
	workload, ours, peer string
	target               float64
	issue                string
}{
	{"seqread-1M-warm", "vhdmount", "raw-file", 0.7, "#11"},
	{"seqread-1M-warm", "vhdmount", "loop", 0, ""},
	{"seqread-1M-warm", "vhdmount", "ceiling", 0, ""},
	{"seqread-1M-warm", "vhdmount", "qsd", 0, ""},
	{"seqread-1M-warm", "vhdmount-chain4", "vhdmount", 0, ""},
	{"seqread-1M-cold", "vhdmount", "raw-file", 0.9, "#11"},
	{"seqread-1M-cold", "vhdmount-chain4", "vhdmount", 0.8, "#11"},
	{"seqread-1M-cold", "vhdmount", "loop", 0, ""},
	{"seqread-1M-cold", "vhdmount", "ceiling", 0, ""},
	{"seqread-1M-cold", "vhdmount", "qsd", 0, ""},
	{"seqread-1M-cold", "vhdmount", "vhdimount", 10, "earlier"},
	{"randread-4k-cached", "vhdmount", "raw-file", 0.5, "#11"},
	{"randread-4k-cached", "vhdmount", "loop", 0, ""},
	{"randread-4k-cached", "vhdmount", "ceiling", 0, ""},
	{"randread-4k-cached", "vhdmount", "qsd", 0, ""},
	{"randread-4k-direct", "vhdmount", "ceiling", 1.2, "#11"},
	{"randread-4k-direct", "vhdmount", "raw-file", 0, ""},
	{"randread-4k-direct", "vhdmount", "loop", 0, ""},
	{"randread-4k-direct", "vhdmount", "qsd", 0, ""},
	{"randread-4k-direct", "vhdmount", "vhdimount", 5, "earlier"},
	{"randread-4k-direct", "vhdmount-chain4", "vhdmount", 0, ""},
	{"randread-4k-direct", "vhdmount", "null", 0, ""},
	{"randread-4k-direct", "null", "ceiling", 0, ""},
	{"randwrite-4k-direct", "vhdmount", "ceiling", 1.2, "#11"},
	{"randwrite-4k-direct", "vhdmount", "raw-file", 0, ""},
	{"randwrite-4k-direct", "vhdmount", "loop", 0, ""},
	{"randwrite-4k-direct", "vhdmount", "qsd", 0, ""},
	{"randwrite-4k-direct", "vhdmount", "null", 0, ""},
	{"randwrite-4k-direct", "null", "ceiling", 0, ""},
	{"randwrite-4k-direct-new", "vhdmount", "loop", 1.0, "#11"},
	{"randwrite-4k-direct-new", "vhdmount", "ceiling", 0, ""},
	{"randwrite-4k-direct-new", "vhdmount", "raw-file", 0, ""},
	{"randwrite-4k-direct-new", "vhdmount", "qsd", 0, ""},
	{"randwrite-4k-direct-new", "vhdmount", "null", 0, ""},
	{"randwrite-4k-direct-new", "null", "ceiling", 0, ""},
	{"seqwrite-1M-new", "vhdmount", "ceiling", 0.7, "earlier"},
	{"seqwrite-1M-new", "vhdmount", "loop", 0, ""},
	{"loop-on-mount-seqread", "loop-dio", "loop-buffered", 0, ""},
	{"convert-raw", "vhd", "qemu-img", 1, "earlier"},
	{"convert-raw", "vhd-chain4", "qemu-img", 1 / 1.3, "earlier"},
	{"seqread-1M-vhdx", "vhdmount-vhdx", "vhdmount", 0.9, "#9"},
	{"seqread-1M-vhdx", "vhdmount-vhdx", "vhdimount-vhdx", 5, "#9"},
	{"seqread-1M-vhdx", "vhdmount-vhdx", "ceiling", 0, ""},
	{"seqread-1M-vhdx", "vhdimount-vhdx", "ceiling", 0, ""},
	{"convert-raw-vhdx", "vhd-vhdx", "qemu-img-vhdx", 1, "#9"},
	{"convert-vhdx", "vhd", "qemu-img", 1, "#10"},
	{"randwrite-4k-direct-new-child-vhdx", "vhdmount-avhdx", "vhdmount-vhd-child", 0.7, "#10"},
	{"randwrite-4k-direct-new-child-vhdx", "vhdmount-avhdx-32M", "vhdmount-vhd-child", 0, ""},
	{"seqwrite-1M-new-vhdx", "vhdmount-vhdx", "vhdmount-vhd", 0.9, "#10"},
	{"seqwrite-1M-new-vhdx", "vhdmount-vhdx-32M", "vhdmount-vhd", 0, ""},
	{"seqread-1M-cold-avhdx-chain4", "vhdmount-avhdx-chain4", "vhdmount-vhdx", 0.8, "#9"},
	{"seqread-1M-cold-avhdx-chain4", "vhdmount-chain4", "vhdmount", 0, ""},
	{"seqread-1M-cold-avhdx-chain4", "vhdmount-avhdx-chain4", "vhdmount-chain4", 0, ""},
}

// limits are absolute goals on medians.
var limits = []struct {
	workload, contender string
	max                 float64
	issue               string
}{
	{"open-ms", "empty-64TiB-vhdx", 200, "#9"},
	{"open-peak-rss", "empty-64TiB-vhdx", 64, "#9"},
}

func (r *report) computeRatios() {
	r.Ratios, r.Limits = nil, nil
	for _, t := range targets {
		a, b := r.get(t.workload, t.ours), r.get(t.workload, t.peer)
		if a == nil || b == nil {
			continue
		}
		var pairs []float64
		for i, rep := range a.Reps {
			pv, ok := b.at(rep)
			if !ok || pv == 0 || a.Values[i] == 0 {
				continue
			}
			q := a.Values[i] / pv
			if !a.HigherBetter {
				q = pv / a.Values[i]
			}
			pairs = append(pairs, q)
		}
		if len(pairs) == 0 {
			continue
		}
		s := append([]float64(nil), pairs...)
		sort.Float64s(s)
		x := ratio{Workload: t.workload, Ours: t.ours, Peer: t.peer, Pairs: pairs, Ratio: median(pairs),
			Min: s[0], Max: s[len(s)-1], Target: t.target, Issue: t.issue}
		if t.target > 0 {
			met := x.Ratio >= t.target
			x.Met = &met
		}
		r.Ratios = append(r.Ratios, x)
	}
	for _, l := range limits {
		a := r.get(l.workload, l.contender)
		if a == nil {
			continue
		}
		r.Limits = append(r.Limits, limit{l.workload, l.contender, a.Median, l.max, a.Unit, l.issue, a.Median < l.max})
	}
}

func minMax(v []float64) (float64, float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[0], s[len(s)-1]
}

func (r *report) print(w io.Writer) {
	r.computeRatios()
	mode := "full run"
	if r.Quick {
		mode = "quick run"
	}
	fmt.Fprintf(w, "\n%s, %d CPUs (%s), kernel %s, dataset %s, %d repetitions, %s\n\n",
		r.Date, r.CPUs, r.CPUModel, r.Kernel, human(r.DatasetBytes), r.Reps, mode)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tcontender\tmedian\tmin-max\tunit\truns")
	for _, x := range r.Results {
		lo, hi := minMax(x.Values)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s-%s\t%s\t%d\n", x.Workload, x.Contender, num(x.Median), num(lo), num(hi), x.Unit, len(x.Values))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Ratios are computed pair by pair within each repetition (>1: ours better); median [min-max] over the pairs.")
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tours / peer\tratio\t[min-max]\tpairs\ttarget")
	for _, x := range r.Ratios {
		t := ""
		if x.Met != nil {
			t = fmt.Sprintf(">= %.2f (%s) ", x.Target, x.Issue)
			if *x.Met {
				t += "met"
			} else {
				t += "MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s / %s\t%.2f\t[%.2f-%.2f]\t%d\t%s\n", x.Workload, x.Ours, x.Peer, x.Ratio, x.Min, x.Max, len(x.Pairs), t)
	}
	for _, l := range r.Limits {
		t := "met"
		if !l.Met {
			t = "MISSED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t\t\t< %s %s (%s) %s\n", l.Workload, l.Contender, num(l.Median), l.Unit, num(l.Max), l.Unit, l.Issue, t)
	}
	tw.Flush()
	if len(r.Skipped) > 0 {
		fmt.Fprintln(w, "\nskipped:")
		for _, s := range r.Skipped {
			fmt.Fprintln(w, "  "+s)
		}
	}
}

// num formats a measurement with about three significant digits.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
