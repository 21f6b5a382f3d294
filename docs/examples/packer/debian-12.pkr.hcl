# Packer template: Debian 12 images for baremetal.byol (and OVHcloud's BYOI / BYOL installers).
#
# NOT RUN IN OUR CI: the CI machine has no internet access to fetch the base image. The lab builds
# its images with mmdebstrap instead (lab/byollab/images.py). See docs/building-images.md.
#
#   packer init debian-12.pkr.hcl
#   packer build -only='qemu.byoi' debian-12.pkr.hcl     # output-byoi/debian-12-byoi.qcow2 (+ .sha512)
#   packer build -only='qemu.byol' debian-12.pkr.hcl     # output-byol/debian-12-byol.qcow2 (+ .sha512)
#
# Both start from Debian's "generic" cloud image (GPT: ESP + BIOS boot + ext4 root, cloud-init), boot it
# under QEMU with UEFI firmware, let cloud-init from cidata/ create a temporary user for Packer's SSH,
# then provision: the packages the installers' steps need, cloud-init limited to the ConfigDrive
# datasource, and a cleanup so that every server gets its own machine-id and SSH host keys.
# BYOI keeps the whole disk. BYOL adds /root/.ovh/make_image_bootable.sh, and byol-one-partition.sh
# turns the disk into an image with only the root partition (BYOL: exactly one ext4/XFS partition).

packer {
  required_plugins {
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0"
    }
  }
}

variable "base_image_url" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"
}

variable "base_image_checksum" {
  type    = string
  default = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

variable "disk_size" {
  type    = string
  default = "4G"
}

variable "accelerator" {
  type        = string
  default     = "kvm"
  description = "kvm, or tcg on a machine without KVM (much slower)"
}

variable "ovmf_code" {
  type    = string
  default = "/usr/share/OVMF/OVMF_CODE_4M.fd"
}

variable "ovmf_vars" {
  type    = string
  default = "/usr/share/OVMF/OVMF_VARS_4M.fd"
}

source "qemu" "debian" {
  iso_url           = var.base_image_url
  iso_checksum      = var.base_image_checksum
  disk_image        = true
  use_backing_file  = false
  format            = "qcow2"
  disk_size         = var.disk_size
  disk_interface    = "virtio"
  disk_discard      = "unmap"
  net_device        = "virtio-net"
  accelerator       = var.accelerator
  memory            = 1024
  cpus              = 2
  headless          = true
  efi_boot          = true
  efi_firmware_code = var.ovmf_code
  efi_firmware_vars = var.ovmf_vars
  # NoCloud seed for the build VM only (the installed servers get a config drive instead)
  cd_files     = ["${path.root}/cidata/meta-data", "${path.root}/cidata/user-data"]
  cd_label     = "cidata"
  communicator = "ssh"
  ssh_username = "packer"
  ssh_password = "packer"
  ssh_timeout  = "20m"
  # the build user goes last: remove it (and its sudo rule) as the VM shuts down
  shutdown_command = "sudo sh -c 'userdel --force --remove packer; rm -f /etc/sudoers.d/90-cloud-init-users; shutdown -P now'"
}

build {
  source "source.qemu.debian" {
    name             = "byoi"
    vm_name          = "debian-12-byoi.qcow2"
    output_directory = "output-byoi"
  }

  source "source.qemu.debian" {
    name             = "byol"
    vm_name          = "debian-12-byol.qcow2"
    output_directory = "output-byol"
  }

  # Wait until cloud-init (NoCloud, from cidata) has finished before changing anything.
  provisioner "shell" {
    inline = ["sudo cloud-init status --wait || true"]
  }

  # A generic kernel (the cloud image's "cloud" kernel lacks drivers for real hardware), GRUB for both
  # firmware types, md RAID and LVM tools for BYOL layouts.
  provisioner "shell" {
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    inline = [
      "sudo -E apt-get update",
      "sudo -E apt-get install -y linux-image-amd64 grub-efi-amd64 grub-pc-bin efibootmgr mdadm lvm2 xfsprogs cloud-init",
      "sudo -E apt-get purge -y 'linux-image-*-cloud-amd64' linux-image-cloud-amd64 || true",
    ]
  }

  # cloud-init: only the config drive (label config-2) the installers write, then nothing.
  provisioner "shell" {
    inline = [
      "printf 'datasource_list: [ ConfigDrive, None ]\\n' | sudo tee /etc/cloud/cloud.cfg.d/90-baremetal-byol.cfg",
    ]
  }

  # BYOL only: the hook the installer runs in a chroot of the installed tree (docs/examples/hooks/).
  provisioner "file" {
    only        = ["qemu.byol"]
    source      = "${path.root}/../hooks/debian/make_image_bootable.sh"
    destination = "/tmp/make_image_bootable.sh"
  }

  provisioner "shell" {
    only = ["qemu.byol"]
    inline = [
      "sudo install -D -m 0755 /tmp/make_image_bootable.sh /root/.ovh/make_image_bootable.sh",
      "rm -f /tmp/make_image_bootable.sh",
    ]
  }

  # Leave nothing machine-specific: cloud-init state, machine-id, SSH host keys, logs (the build user: shutdown_command).
  provisioner "shell" {
    execute_command = "sudo sh -c '{{ .Vars }} {{ .Path }}'"
    inline = [
      "apt-get clean",
      "cloud-init clean --logs --seed",
      "rm -f /etc/ssh/ssh_host_*",
      "truncate -s 0 /etc/machine-id",
      "rm -f /var/lib/dbus/machine-id",
      "find /var/log -type f -exec truncate -s 0 {} +",
      "fstrim -av || true",
    ]
  }

  # BYOL: keep only the root partition (a BYOL image has exactly one partition).
  post-processor "shell-local" {
    only   = ["qemu.byol"]
    inline = ["${path.root}/byol-one-partition.sh output-byol/debian-12-byol.qcow2"]
  }

  # The checksum for imageCheckSum / imageCheckSumType sha512.
  post-processor "shell-local" {
    inline = [
      "cd output-${source.name} && sha512sum debian-12-${source.name}.qcow2 > debian-12-${source.name}.qcow2.sha512",
    ]
  }
}
