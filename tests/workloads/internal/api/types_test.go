package api

import "testing"

func TestSelector(t *testing.T) {
	labels := map[string]string{"app": "widget", "group": "g1", "tier": "db"}
	cases := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"app=widget", true},
		{"app==widget,group=g1", true},
		{"group=g2", false},
		{"group!=g2", true},
		{"group!=g1", false},
		{"tier", true},
		{"missing", false},
		{"missing!=x", true},
	}
	for _, c := range cases {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", c.sel, err)
		}
		if got := s.Matches(labels); got != c.want {
			t.Errorf("%q.Matches = %v, want %v", c.sel, got, c.want)
		}
	}
	if _, err := ParseSelector("=x"); err == nil {
		t.Error("ParseSelector(\"=x\") accepted an empty key")
	}
}

func TestDeepCopySharesNothing(t *testing.T) {
	w := &Widget{Metadata: ObjectMeta{Labels: map[string]string{"a": "1"}}, Spec: WidgetSpec{Payload: []string{"x"}}}
	c := w.DeepCopy()
	c.Metadata.Labels["a"] = "2"
	c.Spec.Payload[0] = "y"
	if w.Metadata.Labels["a"] != "1" || w.Spec.Payload[0] != "x" {
		t.Fatalf("DeepCopy shares state with the original: %+v", w)
	}
}
