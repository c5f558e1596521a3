# Vagrant's side of Only Docker, shipped in the box and loaded by its
# Vagrantfile: a guest type for its BusyBox system, where PID 1 is dockerd
# (no init to ask for a shutdown, no sudo, no package manager, no guest
# additions). Every command runs as root through Dropbear with `sh`.
# Parent "linux": Vagrant's own insert_public_key/remove_public_key (mkdir,
# cat, grep, mv) work on BusyBox as they are.
require "ipaddr"
require "shellwords"

module VagrantPlugins
  module GuestOnlyDocker
    class Plugin < Vagrant.plugin("2")
      name "Only Docker guest"
      description "The BusyBox guest of Only Docker: halt, host name, private networks, NFS"

      guest(:onlydocker, :linux) { Guest }
      %i[halt change_host_name configure_networks nfs_client_installed mount_nfs_folder].each do |cap|
        guest_capability(:onlydocker, cap) { Cap }
      end
    end

    class Guest < Vagrant.plugin("2", :guest)
      def detect?(machine)
        machine.communicate.test("grep -q '^ID=onlydocker$' /etc/os-release")
      end
    end

    module Cap
      # dockerd is PID 1 and ignores the signal BusyBox's plain `poweroff`
      # sends to init: sync, freeze the data disk's filesystem (its data on
      # disk and consistent: nothing unmounts it; ext4's journal and init's
      # e2fsck cover a power cut, not a halt), then power off at once (`poweroff -f`),
      # from a detached shell so that this SSH command returns first.
      def self.halt(machine)
        machine.communicate.execute(
          "setsid sh -c 'sleep 1; sync; fsfreeze -f /var/lib/docker 2>/dev/null; poweroff -f' " \
          "</dev/null >/dev/null 2>&1 &")
      rescue IOError, Vagrant::Errors::SSHDisconnected
        # The machine went down before the command returned: that is the point.
      end

      def self.change_host_name(machine, name)
        short = name.split(".").first
        machine.communicate.execute(<<~SH)
          hostname '#{short}'
          echo '#{short}' > /etc/hostname
          grep -q ' #{name}$' /etc/hosts || echo '127.0.1.1 #{name} #{short}' >> /etc/hosts
        SH
      end

      # Private networks: a static address on the interface Vagrant names
      # (its index among the guest's ethN), or DHCP from the bundled BusyBox
      # image in a host-network container, as console-container.sh does for eth0.
      def self.configure_networks(machine, networks)
        networks.each do |net|
          iface = "eth#{net[:interface]}"
          if net[:type].to_s == "static"
            prefix = IPAddr.new(net[:netmask].to_s).to_i.to_s(2).count("1")
            machine.communicate.execute(<<~SH)
              ip addr flush dev #{iface}
              ip addr add #{net[:ip]}/#{prefix} dev #{iface}
              ip link set #{iface} up
            SH
          else
            machine.communicate.execute(<<~SH)
              . /etc/onlydocker/lane.conf
              ip link set #{iface} up
              docker rm -f dhcp-#{iface} >/dev/null 2>&1
              docker run --rm --name dhcp-#{iface} --net host --cap-add NET_ADMIN "$DHCP_IMAGE" \\
                  udhcpc -i #{iface} -q -n -t 10 -s /usr/share/udhcpc/default.script
            SH
          end
        end
      end

      # NFS synced folders (`type: "nfs"`): the kernel's NFS v3 client, built
      # in (UDP kept), is what mounts them; nothing to install.
      def self.nfs_client_installed(machine)
        machine.communicate.test("grep -qw nfs /proc/filesystems")
      end

      # As Vagrant's Linux capability, with what BusyBox's mount needs: it has
      # no mount.nfs, so the options go to the kernel as they are, and the
      # kernel wants the server's address as addr= (mount.nfs adds it).
      # Options given twice (Vagrant's vers= and udp, and the Vagrantfile's
      # mount_options) are kept once, the Vagrantfile's last.
      def self.mount_nfs_folder(machine, ip, folders)
        folders.each do |_name, opts|
          guest_path = Shellwords.escape(opts[:guestpath])
          host_path = Shellwords.escape(opts[:hostpath])
          mount_opts = []
          mount_opts << "vers=#{opts[:nfs_version]}" if opts[:nfs_version]
          mount_opts << "udp" if opts[:nfs_udp]
          mount_opts += Array(opts[:mount_options])
          mount_opts << "addr=#{ip}" unless mount_opts.any? { |o| o.to_s.start_with?("addr=") }
          mount_opts = mount_opts.map(&:to_s).reverse.uniq.reverse
          command = "mkdir -p #{guest_path} && " \
                    "mount -t nfs -o #{Shellwords.escape(mount_opts.join(","))} #{ip}:#{host_path} #{guest_path}"
          tries = 0
          begin
            machine.communicate.execute(command, error_class: Vagrant::Errors::NFSMountFailed)
          rescue Vagrant::Errors::NFSMountFailed
            tries += 1
            raise if tries >= 3
            sleep 5
            retry
          end
        end
      end
    end
  end
end
