package bench

import (
	"fmt"
	"math"
	"time"
)

// Results is everything one run measured; results.json is this, encoded.
type Results struct {
	Date      time.Time   `json:"date"`
	Seconds   float64     `json:"seconds"` // wall time of the whole run
	Smoke     bool        `json:"smoke"`
	Machine   Machine     `json:"machine"`
	Scenarios []*Scenario `json:"scenarios"`
}

// Scenario is one scenario's outcome.
type Scenario struct {
	Name    string `json:"name"`
	Title   string `json:"title"`
	Setup   string `json:"setup"`             // what is compared with what, and how
	Skipped string `json:"skipped,omitempty"` // the whole scenario did not run: why
	Error   string `json:"error,omitempty"`   // it failed: the error
	// SkippedParts are legs that did not run (the kernel's, without root).
	SkippedParts []SkippedPart `json:"skipped_parts,omitempty"`
	Tables       []Table       `json:"tables,omitempty"`
	// Metrics holds every number the tables show, by a stable name,
	// unrounded (rates in Mbit/s, times in ms unless the name says so).
	Metrics map[string]float64 `json:"metrics,omitempty"`
	Targets []Target           `json:"targets,omitempty"`
	Charts  []Chart            `json:"charts,omitempty"` // the time series behind the plots
	Plots   []string           `json:"plots,omitempty"`  // SVG files written, relative to the output directory
	Notes   []string           `json:"notes,omitempty"`
	Seconds float64            `json:"seconds"` // wall time
}

// SkippedPart is a leg of a scenario that did not run.
type SkippedPart struct {
	Part   string `json:"part"`
	Reason string `json:"reason"`
}

// Table is one markdown table.
type Table struct {
	Title   string     `json:"title,omitempty"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
	// TextCols is how many leading columns hold text (left-aligned in
	// markdown); the rest hold numbers (right-aligned). 0 means 1.
	TextCols int `json:"-"`
}

// metric records v under name, dropping values JSON cannot carry (NaN,
// ±Inf) rather than failing the whole file.
func (s *Scenario) metric(name string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	if s.Metrics == nil {
		s.Metrics = make(map[string]float64)
	}
	s.Metrics[name] = v
}

func (s *Scenario) skipPart(part, reason string) {
	s.SkippedParts = append(s.SkippedParts, SkippedPart{part, reason})
}

func (s *Scenario) note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// Target outcomes.
const (
	Met     = "met"
	Missed  = "missed"
	NoValue = "not measured"
)

// Target is one goal a scenario is held to: a measured value against a
// bound, higher or lower being better.
type Target struct {
	Scenario string   `json:"scenario"`
	Name     string   `json:"name"`             // what is measured
	Want     string   `json:"want"`             // the goal in words, e.g. "≥ 0.95 × sum"
	AtLeast  bool     `json:"at_least"`         // Value must be ≥ Bound (else ≤ Bound)
	Unit     string   `json:"unit,omitempty"`   // of Value and Bound ("" for ratios)
	Bound    *float64 `json:"bound,omitempty"`  // nil: the bound itself was not measured
	Value    *float64 `json:"value,omitempty"`  // nil: not measured
	Status   string   `json:"status"`           // Met, Missed or NoValue
	Detail   string   `json:"detail,omitempty"` // by how much, or why there is no value
}

// newTarget evaluates value against bound. A nil value or bound (a leg
// that was skipped or failed) gives NoValue with why as the detail.
func newTarget(scenario, name, want string, atLeast bool, unit string, value, bound *float64, why string) Target {
	t := Target{Scenario: scenario, Name: name, Want: want, AtLeast: atLeast, Unit: unit, Value: finite(value), Bound: finite(bound)}
	t.evaluate(why)
	return t
}

// finite returns p, or nil if it points to NaN or ±Inf.
func finite(p *float64) *float64 {
	if p == nil || math.IsNaN(*p) || math.IsInf(*p, 0) {
		return nil
	}
	return p
}

func ptr(v float64) *float64 { return &v }

// evaluate sets Status and Detail from Value and Bound.
func (t *Target) evaluate(why string) {
	if t.Value == nil || t.Bound == nil {
		t.Status = NoValue
		t.Detail = why
		return
	}
	v, b := *t.Value, *t.Bound
	ok := v >= b
	if !t.AtLeast {
		ok = v <= b
	}
	if ok {
		t.Status = Met
		t.Detail = ""
		return
	}
	t.Status = Missed
	gap := math.Abs(v - b)
	t.Detail = "missed by " + formatValue(gap, t.Unit)
	if b != 0 {
		t.Detail += fmt.Sprintf(" (%.0f %%)", 100*gap/math.Abs(b))
	}
}

// formatValue prints a target's value with its unit: ratios with two
// decimals, milliseconds whole.
func formatValue(v float64, unit string) string {
	switch unit {
	case "":
		return fmt.Sprintf("%.2f", v)
	case "ms":
		return fmt.Sprintf("%.0f ms", v)
	default:
		return fmt.Sprintf("%.3g %s", v, unit)
	}
}
