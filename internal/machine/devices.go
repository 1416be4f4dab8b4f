package machine

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/undo"
)

// NIC is a network adapter to plug in: a tap on the host and a virtio-net device.
type NIC struct {
	ID, Tap, MAC, Bus string
}

// PlugNIC adds a tap netdev and a virtio-net device to the running guest; on
// failure nothing it added stays.
func (m *Machine) PlugNIC(ctx context.Context, n NIC) (err error) {
	var u undo.Stack
	defer u.OnError(&err, m.o.Log)
	netdev := n.ID + "-net"
	if err := m.qmp.Execute(ctx, "netdev_add", map[string]any{"type": "tap", "id": netdev, "ifname": n.Tap, "script": "no", "downscript": "no"}, nil); err != nil {
		return fmt.Errorf("attaching tap %s: %w", n.Tap, err)
	}
	u.Add("remove netdev "+netdev, func(ctx context.Context) error { return m.RemoveNetdev(ctx, n.ID) })
	dev := map[string]any{"driver": "virtio-net-pci", "id": n.ID, "netdev": netdev, "mac": n.MAC}
	if n.Bus != "" {
		dev["bus"] = n.Bus
	}
	if err := m.qmp.Execute(ctx, "device_add", dev, nil); err != nil {
		return fmt.Errorf("plugging in NIC %s: %w", n.ID, err)
	}
	return nil
}

// RemoveNetdev removes the tap netdev of NIC id (its device unplugged first).
func (m *Machine) RemoveNetdev(ctx context.Context, id string) error {
	return m.qmp.Execute(ctx, "netdev_del", map[string]any{"id": id + "-net"}, nil)
}

// Disk is a disk image to plug in as a virtio-blk device.
type Disk struct {
	ID, Path, Format, Bus string
}

// PlugDisk opens the image (a file node, a format node with no backing: hv
// names every backing itself) and adds a virtio-blk device; on failure
// nothing it opened stays.
func (m *Machine) PlugDisk(ctx context.Context, d Disk) (err error) {
	var u undo.Stack
	defer u.OnError(&err, m.o.Log)
	format, file := qemu.ImageNodes(d.Path)
	if err := m.qmp.Execute(ctx, "blockdev-add", map[string]any{"driver": "file", "node-name": file, "filename": d.Path}, nil); err != nil {
		return fmt.Errorf("opening disk %s: %w", d.ID, err)
	}
	u.Add("close "+file, func(ctx context.Context) error { return m.closeNode(ctx, file) })
	node := map[string]any{"driver": d.Format, "node-name": format, "file": file}
	if d.Format == "qcow2" {
		node["backing"] = nil // never the file its header names (see qemu.BlockdevArgs)
	}
	if err := m.qmp.Execute(ctx, "blockdev-add", node, nil); err != nil {
		return fmt.Errorf("opening disk %s: %w", d.ID, err)
	}
	u.Add("close "+format, func(ctx context.Context) error { return m.closeNode(ctx, format) })
	dev := map[string]any{"driver": "virtio-blk-pci", "id": d.ID, "drive": format}
	if d.Bus != "" {
		dev["bus"] = d.Bus
	}
	if err := m.qmp.Execute(ctx, "device_add", dev, nil); err != nil {
		return fmt.Errorf("plugging in disk %s: %w", d.ID, err)
	}
	return nil
}

// CloseImage closes the block nodes of an image file that no device uses.
func (m *Machine) CloseImage(ctx context.Context, path string) {
	format, file := qemu.ImageNodes(path)
	_ = m.closeNode(ctx, format)
	_ = m.closeNode(ctx, file)
}

func (m *Machine) closeNode(ctx context.Context, node string) error {
	return m.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": node}, nil)
}

// Unplug asks the guest to release device id and waits until QEMU reports it
// gone (DEVICE_DELETED): the guest must cooperate, as with a PCIe attention
// button.
func (m *Machine) Unplug(ctx context.Context, id string) error {
	events, stop := m.qmp.Subscribe()
	defer stop()
	if err := m.qmp.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		return fmt.Errorf("removing device %s: %w", id, err)
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("QEMU exited while removing device %s: %w", id, errdefs.ErrUnavailable)
			}
			if ev.Name != "DEVICE_DELETED" {
				continue
			}
			var d struct {
				Device string `json:"device"`
			}
			if json.Unmarshal(ev.Data, &d) == nil && d.Device == id {
				return nil
			}
		case <-timeout:
			return errdefs.WithHint(fmt.Errorf("the guest did not release device %s within 60s (is its OS still booting, or does it block PCIe hot-unplug?): %w", id, errdefs.ErrTimeout),
				"try again, or stop the VM and remove the device then")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
