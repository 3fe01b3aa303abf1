package main

import (
	"fmt"
	"io"
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
	Skipped      []string  `json:"skipped,omitempty"`
	Seconds      float64   `json:"seconds"`
}

type result struct {
	Workload     string    `json:"workload"`
	Contender    string    `json:"contender"`
	Unit         string    `json:"unit"`
	HigherBetter bool      `json:"higher_is_better"`
	Values       []float64 `json:"values"`
	Median       float64   `json:"median"`
}

// ratio compares our median with a peer's, oriented so that > 1 means we do
// better; Target is the goal from the issues (0 when there is none).
type ratio struct {
	Workload string  `json:"workload"`
	Ours     string  `json:"ours"`
	Peer     string  `json:"peer"`
	Ratio    float64 `json:"ratio"`
	Target   float64 `json:"target,omitempty"`
	Met      *bool   `json:"met,omitempty"`
}

func (r *report) add(workload, contender, unit string, v float64, higherBetter bool) {
	for _, x := range r.Results {
		if x.Workload == workload && x.Contender == contender {
			x.Values = append(x.Values, v)
			x.Median = median(x.Values)
			return
		}
	}
	r.Results = append(r.Results, &result{workload, contender, unit, higherBetter, []float64{v}, v})
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

// targets are the goals the issues set: ours vs peer, ratio at least target
// (for lower-is-better units the ratio is peer/ours).
var targets = []struct {
	workload, ours, peer string
	target               float64
}{
	{"seqread-1M", "vhdmount", "ceiling", 0.8},
	{"seqread-1M", "vhdmount", "vhdimount", 10},
	{"seqread-1M", "vhdmount-chain4", "vhdmount", 0.8},
	{"randread-4k-direct-1job", "vhdmount", "ceiling", 0},
	{"randread-4k-direct-1job", "vhdmount", "vhdimount", 0},
	{"randread-4k-direct-2jobs", "vhdmount", "ceiling", 0.8},
	{"randread-4k-direct-2jobs", "vhdmount", "vhdimount", 5},
	{"randread-4k-direct-2jobs", "vhdmount-chain4", "vhdmount", 0},
	{"seqwrite-1M-empty", "vhdmount", "ceiling", 0.7},
	{"randwrite-4k-direct-2jobs", "vhdmount", "ceiling", 0.7},
	{"convert-raw", "vhd", "qemu-img", 1},
	{"convert-raw", "vhd-chain4", "qemu-img", 1 / 1.3},
}

func (r *report) computeRatios() {
	r.Ratios = nil
	for _, t := range targets {
		a, b := r.get(t.workload, t.ours), r.get(t.workload, t.peer)
		if a == nil || b == nil || a.Median == 0 || b.Median == 0 {
			continue
		}
		q := a.Median / b.Median
		if !a.HigherBetter {
			q = b.Median / a.Median
		}
		x := ratio{Workload: t.workload, Ours: t.ours, Peer: t.peer, Ratio: q, Target: t.target}
		if t.target > 0 {
			met := q >= t.target
			x.Met = &met
		}
		r.Ratios = append(r.Ratios, x)
	}
}

func (r *report) print(w io.Writer) {
	r.computeRatios()
	fmt.Fprintf(w, "\n%s, %d CPUs (%s), kernel %s, dataset %s, %d repetitions (medians)\n\n",
		r.Date, r.CPUs, r.CPUModel, r.Kernel, human(r.DatasetBytes), r.Reps)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tcontender\tmedian\tunit\truns")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%d\n", x.Workload, x.Contender, x.Median, x.Unit, len(x.Values))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tours / peer\tratio (>1: ours better)\ttarget")
	for _, x := range r.Ratios {
		t := ""
		if x.Met != nil {
			t = fmt.Sprintf(">= %.2f ", x.Target)
			if *x.Met {
				t += "met"
			} else {
				t += "NOT MET"
			}
		}
		fmt.Fprintf(tw, "%s\t%s / %s\t%.2f\t%s\n", x.Workload, x.Ours, x.Peer, x.Ratio, t)
	}
	tw.Flush()
	if len(r.Skipped) > 0 {
		fmt.Fprintln(w, "\nskipped:")
		for _, s := range r.Skipped {
			fmt.Fprintln(w, "  "+s)
		}
	}
}
