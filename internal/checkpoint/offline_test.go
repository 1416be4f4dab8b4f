package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// buildTree makes five checkpoints with two branches:
//
//	c1 ── c2 ─┬─ c3
//	          └─ c4 ── c5 ── (now)
//
// with the VM's writes after c5 not in any checkpoint.
func buildTree(t *testing.T) *vm {
	v := newVM(t)
	v.write(0, 0xa1)
	v.create("c1")
	v.write(1, 0xb2)
	v.create("c2")
	v.write(2, 0xc3)
	v.write(0, 0x13) // overwrites c1's data on this branch only
	v.create("c3")
	v.apply("c2")
	v.write(3, 0xd4)
	v.create("c4")
	v.write(4, 0xe5)
	v.write(1, 0x15)
	v.create("c5")
	v.write(5, 0xf6)
	v.check("built")
	c2, _ := v.tree.Get("c2")
	if kids := v.tree.Children(c2.ID); len(kids) != 2 {
		t.Fatalf("c2 has children %v, want c3 and c4", kids)
	}
	return v
}

func TestApplyEachCheckpoint(t *testing.T) {
	base := buildTree(t)
	for _, name := range base.names() {
		v := base.clone(t)
		v.apply(name)
		v.check("apply " + name)
		v.write(6, 0x66) // the branch goes on, and the checkpoint does not change
		v.create("after-" + name)
		v.check("create after " + name)
	}
}

// TestDeleteInEveryOrder deletes 3 of the 5 checkpoints in every order.
func TestDeleteInEveryOrder(t *testing.T) {
	base := buildTree(t)
	names := base.names()
	for _, a := range names {
		for _, b := range names {
			for _, c := range names {
				if a == b || b == c || a == c || testing.Short() && a != "c2" {
					continue // -short: only the orders that start at the node with two children
				}
				order := []string{a, b, c}
				t.Run(fmt.Sprint(order), func(t *testing.T) {
					v := base.clone(t)
					for _, n := range order {
						if err := v.off.Delete(v.ctx, v.tree, n, false); err != nil {
							t.Fatalf("delete %s: %v", n, err)
						}
						v.check("after deleting " + n)
					}
					if got := len(v.tree.Checkpoints); got != 2 {
						t.Fatalf("%d checkpoints left, want 2", got)
					}
				})
			}
		}
	}
}

func TestDeleteSubtree(t *testing.T) {
	base := buildTree(t)
	want := map[string][]string{
		"c1": nil,
		"c2": {"c1"},
		"c3": {"c1", "c2", "c4", "c5"},
		"c4": {"c1", "c2", "c3"},
		"c5": {"c1", "c2", "c3", "c4"},
	}
	for name, left := range want {
		v := base.clone(t)
		if err := v.off.Delete(v.ctx, v.tree, name, true); err != nil {
			t.Fatalf("delete subtree %s: %v", name, err)
		}
		v.check("after deleting subtree " + name)
		if !slices.Equal(v.names(), left) {
			t.Errorf("after deleting subtree %s: %v left, want %v", name, v.names(), left)
		}
	}
}

func TestDeleteAllThenCreate(t *testing.T) {
	v := buildTree(t)
	for _, n := range []string{"c2", "c5", "c1", "c4", "c3"} {
		if err := v.off.Delete(v.ctx, v.tree, n, false); err != nil {
			t.Fatal(err)
		}
		v.check("delete " + n)
	}
	if v.tree.Current != "" || len(v.tree.Active) != 2 {
		t.Fatalf("tree after deleting all: current %q, active %v", v.tree.Current, v.tree.Active)
	}
	v.create("again")
	v.write(7, 0x77)
	v.check("create again")
}

// errCrash stands for hvd being killed.
var errCrash = errors.New("simulated crash")

// TestCrashAtEveryStep stops each operation after each durable step, then
// recovers from the files alone.
func TestCrashAtEveryStep(t *testing.T) {
	base := buildTree(t)
	ops := []struct {
		name string
		run  func(v *vm) error
		done func(v *vm) // how the expected content moves when it took effect
	}{
		{"create", func(v *vm) error {
			_, err := v.off.Create(v.ctx, v.tree, CreateRequest{Name: "new", Disks: v.disks()})
			return err
		}, func(v *vm) { v.expect["new"] = v.now }},
		{"apply c3", func(v *vm) error { return v.off.Apply(v.ctx, v.tree, "c3") }, func(v *vm) { v.now = v.expect["c3"] }},
		{"delete c2 (two children)", func(v *vm) error { return v.off.Delete(v.ctx, v.tree, "c2", false) }, nil},
		{"delete c1 (base)", func(v *vm) error { return v.off.Delete(v.ctx, v.tree, "c1", false) }, nil},
		{"delete c5 (current)", func(v *vm) error { return v.off.Delete(v.ctx, v.tree, "c5", false) }, nil},
		{"delete subtree c4", func(v *vm) error { return v.off.Delete(v.ctx, v.tree, "c4", true) }, nil},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			for stop := 1; ; stop++ {
				v := base.clone(t)
				calls, at := 0, ""
				v.off.Hook = func(label string) error {
					if calls++; calls == stop {
						at = label
						return errCrash
					}
					return nil
				}
				err := op.run(v)
				if err == nil {
					if stop == 1 {
						t.Fatal("the hook was never called")
					}
					return
				}
				if !errors.Is(err, errCrash) {
					t.Fatalf("stop %d: %v", stop, err)
				}
				before := len(v.tree.Checkpoints)
				if v.tree, err = Recover(v.ctx, v.dir, v.tool); err != nil {
					t.Fatalf("recover after %q: %v", at, err)
				}
				if v.tree.Journal != nil {
					t.Fatalf("after %q: journal left: %+v", at, v.tree.Journal)
				}
				if tookEffect(op.name, v, before) && op.done != nil {
					op.done(v)
				}
				v.check(fmt.Sprintf("%s, crash after %q", op.name, at))
			}
		})
	}
}

// tookEffect tells whether Recover rolled the operation forward.
func tookEffect(op string, v *vm, before int) bool {
	switch op {
	case "create":
		_, err := v.tree.Get("new")
		return err == nil
	case "apply c3":
		c3, _ := v.tree.Get("c3")
		return v.tree.Current == c3.ID
	}
	return len(v.tree.Checkpoints) < before
}
