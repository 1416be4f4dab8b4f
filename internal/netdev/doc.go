// Package netdev builds Hyper-V's virtual switches from Linux bridges, taps,
// nftables and dnsmasq.
//
// Choices worth knowing:
//   - external: the uplink is only enslaved to the bridge. An address on the
//     uplink stops working once it is a bridge port, so the host's address
//     belongs on the bridge; hv refuses an uplink that carries the host's only
//     default route rather than cut the host off.
//   - internal: the bridge carries the host address from Subnet; with DHCP a
//     dnsmasq (DHCP only, no DNS) serves that bridge alone.
//   - private: the bridge has no address, IPv6 off, and an nftables rule in
//     table "bridge hv" drops every frame its ports send towards the host.
//     The rule matches the ports by name (iifname) because the bridge-name
//     match (meta ibrname) needs CONFIG_NFT_BRIDGE_META, which not every
//     kernel has; the rule set is rebuilt whenever a port comes or goes.
//   - VM MACs use QEMU's 52:54:00 prefix (locally administered, unicast) so
//     tools recognise them; a tap's own MAC is the guest's with the first byte
//     0xfe, as libvirt does, so the bridge never mistakes the guest's MAC for a
//     local one and never adopts a tap's MAC as its own.
//   - A Manager acts in the network namespace it was created in, whatever
//     thread calls it (tests rely on this; hvd runs in the host's).
package netdev
