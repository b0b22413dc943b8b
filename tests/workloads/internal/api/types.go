// Package api holds the Widget API types (group demo.io, version v1) shared
// by apiserver-sim and controller-sim, shaped like Kubernetes objects:
// metadata with a resourceVersion, a spec, a status subresource, list and
// watch-event envelopes, and a Status error body.
package api

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Group, Version and Resource name the simulated API.
const (
	Group    = "demo.io"
	Version  = "v1"
	Resource = "widgets"
	Kind     = "Widget"
)

// APIVersion is the apiVersion field of every Widget.
const APIVersion = Group + "/" + Version

// ObjectMeta is the subset of Kubernetes object metadata the simulation uses.
type ObjectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp string            `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// WidgetSpec is the desired state. Payload pads objects to a realistic
// size (about 1 KiB) so that encoding and decoding cost what they would.
type WidgetSpec struct {
	Replicas int      `json:"replicas"`
	Color    string   `json:"color"`
	Size     int      `json:"size"`
	Payload  []string `json:"payload,omitempty"`
}

// WidgetStatus is written by the controller through the status subresource.
type WidgetStatus struct {
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
	Ready              bool   `json:"ready,omitempty"`
	Hash               string `json:"hash,omitempty"`
	GroupSize          int    `json:"groupSize,omitempty"`
	Score              int64  `json:"score,omitempty"`
	Message            string `json:"message,omitempty"`
	FanoutFrom         string `json:"fanoutFrom,omitempty"`
}

// Widget is the one resource kind of the simulated API.
type Widget struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   ObjectMeta   `json:"metadata"`
	Spec       WidgetSpec   `json:"spec"`
	Status     WidgetStatus `json:"status"`
}

// Key returns the cache key "namespace/name".
func (w *Widget) Key() string { return w.Metadata.Namespace + "/" + w.Metadata.Name }

// DeepCopy returns a copy that shares no maps or slices with w.
func (w *Widget) DeepCopy() *Widget {
	c := *w
	c.Metadata.Labels = copyMap(w.Metadata.Labels)
	c.Metadata.Annotations = copyMap(w.Metadata.Annotations)
	if w.Spec.Payload != nil {
		c.Spec.Payload = append([]string(nil), w.Spec.Payload...)
	}
	return &c
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// ListMeta is the metadata of a list response.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion"`
	Continue        string `json:"continue,omitempty"`
}

// WidgetList is the body of a LIST response.
type WidgetList struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   ListMeta `json:"metadata"`
	Items      []Widget `json:"items"`
}

// Watch event types.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
	Error    = "ERROR"
)

// WatchEvent is one line of a watch stream. Object is a Widget, or a Status
// for ERROR events.
type WatchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// Status is the error body of a failed request (kind Status), also the
// object of an ERROR watch event.
type Status struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Status     string `json:"status"`
	Message    string `json:"message"`
	Reason     string `json:"reason"`
	Code       int    `json:"code"`
}

// NewStatus builds a Failure Status.
func NewStatus(code int, reason, msg string) Status {
	return Status{APIVersion: "v1", Kind: "Status", Status: "Failure", Message: msg, Reason: reason, Code: code}
}

// Requirement is one term of a label selector.
type Requirement struct {
	Key   string
	Op    string // "=", "!=" or "exists"
	Value string
}

// Selector is a parsed equality-based label selector (terms are ANDed).
type Selector []Requirement

// ParseSelector parses "k=v,k2!=v2,k3" (also "k==v"). The empty string
// selects everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		var r Requirement
		switch {
		case strings.Contains(term, "!="):
			i := strings.Index(term, "!=")
			r = Requirement{Key: term[:i], Op: "!=", Value: term[i+2:]}
		case strings.Contains(term, "=="):
			i := strings.Index(term, "==")
			r = Requirement{Key: term[:i], Op: "=", Value: term[i+2:]}
		case strings.Contains(term, "="):
			i := strings.Index(term, "=")
			r = Requirement{Key: term[:i], Op: "=", Value: term[i+1:]}
		default:
			r = Requirement{Key: term, Op: "exists"}
		}
		r.Key = strings.TrimSpace(r.Key)
		r.Value = strings.TrimSpace(r.Value)
		if r.Key == "" {
			return nil, fmt.Errorf("invalid label selector term %q", term)
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, ok := labels[r.Key]
		switch r.Op {
		case "=":
			if !ok || v != r.Value {
				return false
			}
		case "!=":
			if ok && v == r.Value {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		}
	}
	return true
}

// String renders the selector in its canonical, sorted form.
func (s Selector) String() string {
	parts := make([]string, 0, len(s))
	for _, r := range s {
		switch r.Op {
		case "exists":
			parts = append(parts, r.Key)
		default:
			parts = append(parts, r.Key+r.Op+r.Value)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
