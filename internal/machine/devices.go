package machine

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
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
	if err := qmp.Do(ctx, m.qmp, qmp.NetdevAdd{Netdev: qmp.TapNetdev{ID: netdev, Ifname: n.Tap, Script: "no", Downscript: "no"}}); err != nil {
		return fmt.Errorf("attaching tap %s: %w", n.Tap, err)
	}
	u.Add("remove netdev "+netdev, func(ctx context.Context) error { return m.RemoveNetdev(ctx, n.ID) })
	if err := qmp.Do(ctx, m.qmp, qmp.DeviceAdd{Driver: "virtio-net-pci", ID: n.ID, Netdev: netdev, MAC: n.MAC, Bus: n.Bus}); err != nil {
		return fmt.Errorf("plugging in NIC %s: %w", n.ID, err)
	}
	return nil
}

// RemoveNetdev removes the tap netdev of NIC id (its device unplugged first).
func (m *Machine) RemoveNetdev(ctx context.Context, id string) error {
	return qmp.Do(ctx, m.qmp, qmp.NetdevDel{ID: id + "-net"})
}

// Disk is a disk image to plug in as a virtio-blk device. OnError is
// qemu.DiskSpec's: what QEMU does when the host's storage fails.
type Disk struct {
	ID, Path, Format, Bus string
	OnError               string
}

// PlugDisk opens the image (a file node, a format node with no backing: hv
// names every backing itself) and adds a virtio-blk device; on failure
// nothing it opened stays.
func (m *Machine) PlugDisk(ctx context.Context, d Disk) (err error) {
	var u undo.Stack
	defer u.OnError(&err, m.o.Log)
	format, file := qemu.ImageNodes(d.Path)
	if err := qmp.Do(ctx, m.qmp, qmp.BlockdevAdd{Node: qmp.FileNode{NodeName: file, Filename: d.Path}}); err != nil {
		return fmt.Errorf("opening disk %s: %w", d.ID, err)
	}
	u.Add("close "+file, func(ctx context.Context) error { return m.closeNode(ctx, file) })
	var node qmp.BlockdevOptions = qmp.RawNode{NodeName: format, File: qmp.BlockdevRef{Name: file}}
	if d.Format == "qcow2" {
		// No Backing: never the file its header names (see qemu.BlockdevArgs).
		node = qmp.Qcow2Node{NodeName: format, File: qmp.BlockdevRef{Name: file}}
	}
	if err := qmp.Do(ctx, m.qmp, qmp.BlockdevAdd{Node: node}); err != nil {
		return fmt.Errorf("opening disk %s: %w", d.ID, err)
	}
	u.Add("close "+format, func(ctx context.Context) error { return m.closeNode(ctx, format) })
	dev := qmp.DeviceAdd{Driver: "virtio-blk-pci", ID: d.ID, Drive: format, Bus: d.Bus}
	if d.OnError != "" {
		dev.Props = map[string]any{"werror": d.OnError, "rerror": d.OnError}
	}
	if err := qmp.Do(ctx, m.qmp, dev); err != nil {
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
	return qmp.Do(ctx, m.qmp, qmp.BlockdevDel{NodeName: node})
}

// Unplug asks the guest to release device id and waits until QEMU reports it
// gone (DEVICE_DELETED): the guest must cooperate, as with a PCIe attention
// button.
func (m *Machine) Unplug(ctx context.Context, id string) error {
	events, stop := m.qmp.Subscribe()
	defer stop()
	if err := qmp.Do(ctx, m.qmp, qmp.DeviceDel{ID: id}); err != nil {
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
			if d, err := qmp.DecodeEvent[qmp.DeviceDeletedEvent](ev); err == nil && d.Device == id {
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
