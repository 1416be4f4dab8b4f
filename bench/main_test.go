package main

import (
	"testing"
)

func TestSelectBenchmarks(t *testing.T) {
	if s, err := selectBenchmarks(""); err != nil || !s["boot"] || !s["memory"] {
		t.Errorf("default = %v, %v", s, err)
	}
	if s, err := selectBenchmarks("memory"); err != nil || s["boot"] || !s["memory"] {
		t.Errorf("memory = %v, %v", s, err)
	}
	if _, err := selectBenchmarks("boot,nope"); err == nil {
		t.Error("unknown benchmark accepted")
	}
}
