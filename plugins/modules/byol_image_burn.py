#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_image_burn
short_description: Download, verify and write a customer's disk image (BYOI) or copy its files (BYOL)
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - Downloads a qcow2 or raw image over HTTP(S) (or from a C(file://) URL) exactly once, hashing it while it streams,
    and decompressing C(.xz), C(.gz), C(.zst) and C(.bz2) data recognised by its content.
  - With O(mode=disk) (BYOI) the image is written onto the whole disk O(device). A raw image streams straight to the
    disk while it is hashed; a qcow2 image's clusters are written while it downloads when its layout allows it
    (O(qcow2_streaming)), else it goes to scratch space (tmpfs when it fits, else O(scratch_dir)) and
    C(qemu-img convert) writes it. Areas without data are zeroed by the device (BLKZEROOUT / write-zeroes). Afterwards the kernel re-reads the
    partition table and the backup GPT header is moved to the real end of the disk (C(sgdisk -e)).
  - With O(mode=files) (BYOL) the image must have exactly one partition, formatted ext4 or XFS, holding an executable
    C(/root/.ovh/make_image_bootable.sh). The partition is attached read-only (C(qemu-nbd) where the kernel has nbd,
    otherwise a loop device at the partition's offset in a raw copy on scratch space) and its files are copied onto
    O(dest) with C(rsync -aHAXx --numeric-ids --sparse), keeping owners, modes, hard links, ACLs, extended attributes,
    sparse files and device nodes.
  - Everything that can be checked before writing is checked before the disk or O(dest) is touched. That is the checksum pair,
    the real format against O(image_type) (from the bytes, never from the file name), a qcow2 header (backing files,
    external data files and encryption are refused), a raw image's partition table, the image size against the
    device size, and for O(mode=files) the partition, filesystem and hook.
  - Error messages follow the OVHcloud BYOI guide, with the real values. Download errors name the URL (without
    credentials) and the HTTP status or reason; request headers are never shown, and downloaded content is described
    by its type and size, never quoted.
  - "Redirects (301, 302, 303, 307, 308) are followed by the module: to http and https URLs only, never from https to
    http, at most 10. O(http_headers) (every one of them) and the user:password of O(url) are sent only to the scheme,
    host and port of O(url): after a redirect to another origin they are dropped (a pre-signed object-store URL
    carries its own authorisation)."
  - A download that ends early is an error, never a success. Its length is checked against C(Content-Length), each
    compressed stream must reach its end marker, a qcow2 image must hold every cluster its tables refer to. Decompression
    stops at the first byte past the device size. What was written to the disk by then has its partition-table areas
    zeroed (RV(wiped_signatures)).
  - "Progress (bytes, percent, rate, ETA) is reported at least every O(progress_interval) seconds while the module
    runs: to the JSON file O(progress_file) (replaced at each report; a role polling an C(async) task reads it) and to
    the system journal/syslog (C(journalctl -f -t ansible-byol_image_burn))."
  - "Idempotence: what was written is recorded, and a record is trusted only when the disk still holds what it
    describes. For O(mode=disk) a small JSON record in O(state_dir) holds the image digest, the HTTP validators, the
    partition table as the image defines it (starts, sizes, types, unique GUIDs, names; not the backup GPT location
    that C(sgdisk -e) moves, nor a config drive added after the image), the hash of the boot code and of the boot
    loader's area before the first partition, and a fingerprint of sampled blocks of the disk; all are read back
    (a few MiB) and any difference makes the module write again, RV(reason) saying what differed. For O(mode=files)
    the record is C(var/lib/baremetal-byol/image_burn.json) under O(dest), written after the copy is synced, and read
    and written without following any symbolic link in the tree. A second run with the same image reports no change
    and writes nothing; when neither a checksum nor ETag/Last-Modified identify the image, it is downloaded and hashed
    (not written) to compare."
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.server_lock
attributes:
  check_mode:
    support: full
    details: Check mode downloads nothing (at most an HTTP HEAD request) and reports what would be written in RV(plan).
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  url:
    description:
      - URL of the image (C(http://), C(https://) or C(file:///)).
      - Credentials in the URL (C(user:password@)) are refused; give them as an C(Authorization) header in
        O(http_headers), which is never shown.
    type: str
    required: true
  image_type:
    description: Declared format of the image, checked against its real format.
    type: str
    required: true
    choices: [qcow2, raw]
  mode:
    description: V(disk) writes the image onto O(device) (BYOI); V(files) copies the files of its single partition onto O(dest) (BYOL).
    type: str
    choices: [disk, files]
    default: disk
  device:
    description:
      - Whole disk to write with O(mode=disk), for example C(/dev/sda) or a C(/dev/disk/by-id/) link.
      - A partition, an md array or a logical volume is refused (also in check mode), before anything is written.
    type: path
  dest:
    description:
      - Mounted target tree for O(mode=files).
      - Resolved first (C(..), symbolic links); C(/) or a directory of the rescue system (C(/etc), C(/usr), C(/tmp)...) is
        refused.
    type: path
    default: /tmp/a
  checksum:
    description:
      - Expected checksum (hex) of the downloaded bytes (compressed bytes for a compressed image). Give it with
        O(checksum_type) or not at all.
      - "As C(ansible.builtin.get_url) takes it, V(<type>:<URL>) (for example
        V(sha512:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS)) names a checksum file
        (C(SHA256SUMS) style, C(<hex>  <name>) lines, or the BSD lines of C(sha256sum --tag)); the digest is its one
        entry for the file name of O(url). O(checksum_type) may then be left out. The file is fetched with the image's
        redirect and retry policy; O(http_headers) go to it only when it is on the origin (scheme, host, port) of
        O(url)."
    type: str
  checksum_type:
    description: Algorithm of O(checksum).
    type: str
    choices: [md5, sha1, sha256, sha512]
  http_headers:
    description:
      - Extra HTTP request headers, for example C(Authorization). Never logged nor shown in messages.
      - Names are RFC 7230 tokens, each once (whatever its case); values are printable ASCII or Latin-1 on one line.
        C(Host), C(Content-Length), C(Transfer-Encoding), C(Connection), C(Range) and the other hop-by-hop headers
        are set by the module and refused.
    type: dict
    default: {}
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: PEM file of CA certificates to trust for HTTPS (for a private CA).
    type: path
  timeout:
    description: Network timeout in seconds (connect and each read).
    type: int
    default: 60
  retries:
    description:
      - How many times the download may be retried in all, after a connection error, a timeout, a connection cut
        during the body (a body shorter than its C(Content-Length), a chunked body cut in a chunk), an HTTP status
        408, 429, 500, 502, 503 or 504. Any other 4xx status fails at once. V(0) disables retries.
      - A download cut in its body continues where it stopped (C(Range) with C(If-Range)) when the server supports it
        and the image is unchanged, else it starts again and the bytes already received are read again and compared
        (through their digest). Every retry is reported in RV(retries).
      - The default follows ironic-python-agent's C(image_download_connection_retries) (9).
    type: int
    default: 9
  retry_delay:
    description:
      - Seconds to wait before the first retry, doubled before each further retry up to 60 s (or this delay when it
        is longer). A C(Retry-After) of a 429 or 503 answer replaces it. The default follows ironic-python-agent's
        C(image_download_connection_retry_interval) (10).
    type: float
    default: 10.0
  retry_max_time:
    description:
      - How many seconds the download may spend failing in all (from each failure until an attempt answers again,
        waits included). A wait (or a C(Retry-After)) that would go beyond it fails the download at once.
    type: int
    default: 600
  scratch_dir:
    description:
      - Directory on a disk that is not being installed, used for qcow2 images (and BYOL images) that do not fit in memory
        (a tmpfs such as C(/dev/shm) is used when the image fits).
    type: path
  force:
    description: Write even when the record says this image is already written.
    type: bool
    default: false
  state_dir:
    description: Where the O(mode=disk) record of written images is kept on the rescue system.
    type: path
    default: /var/lib/baremetal-byol
  progress_file:
    description: JSON file replaced at each progress report (latest line and numbers). Empty string to disable.
    type: path
    default: /run/baremetal-byol/image_burn.progress
  progress_interval:
    description: Seconds between progress reports (1 to 30).
    type: int
    default: 10
  attach:
    description: How O(mode=files) attaches the image. V(auto) uses qemu-nbd where the nbd kernel module exists, else a loop device.
    type: str
    choices: [auto, nbd, loop]
    default: auto
  qcow2_streaming:
    description:
      - With O(mode=disk), write a qcow2 image's data clusters onto the disk while it downloads when its layout allows
        it (L1 and each L2 table before the data they map, as C(qemu-img convert) makes them; deflate-compressed
        clusters, as C(qemu-img convert -c) makes them, are inflated on the way). No scratch space is needed then.
        An image that turns out not to be streamable (L1 table after L2 tables, L2 tables after their data, zstd
        compression, extended L2 entries, internal snapshots, shared clusters) is downloaded a second time into
        scratch space and written by C(qemu-img convert), which rewrites the whole virtual disk.
      - V(false) always uses C(qemu-img convert) after the download.
    type: bool
    default: true
  stage_only:
    description:
      - With O(mode=files), download the image into scratch space and check it without writing to any disk or to
        O(dest). The image is hashed while it downloads (one pass) into a tmpfs (C(/dev/shm), C(/run/shm) or a tmpfs
        C(/tmp)) when it fits there and in the available memory with 512 MiB to spare, else into O(scratch_dir).
        The checksum, the real format against O(image_type), the qcow2 header, exactly one partition, ext4 or XFS and an
        executable C(/root/.ovh/make_image_bootable.sh) are checked. RV(staged_path) names the checked copy; give it
        as O(staged) to the run that copies the files (after partitioning), which then downloads nothing.
      - When the image fits neither in memory nor in O(scratch_dir), only its first MiB is checked (format, qcow2
        header) and the result says so (RV(staged=false), RV(fits=false), with the sizes in RV(space)); the image can
        then be downloaded onto the new filesystems by giving the copying run a O(scratch_dir) under O(dest).
      - A staged copy left by an earlier run that stopped is removed first (one staged image at a time). When O(dest)
        already holds this image (its record), nothing is staged and the result is unchanged.
    type: bool
    default: false
  staged:
    description:
      - With O(mode=files), the RV(staged_path) of an earlier O(stage_only=true) run. Its record (size, time, URL,
        type, digest) must match this request, else the image is downloaded again. The staged copy is removed when the
        run ends, also when it fails.
    type: path
requirements:
  - qemu-img and qemu-nbd (qemu-utils), sgdisk (gdisk), sfdisk and losetup (util-linux), rsync, zstd for zstd-compressed images.
seealso:
  - name: OVHcloud BYOI guide
    description: The errors table this module reproduces.
    link: https://help.ovhcloud.com/csm/en-dedicated-servers-bringyourownimage?id=kb_article_view&sysparm_article=KB0043281
"""

EXAMPLES = r"""
- name: Write a raw image onto the first disk (BYOI)
  baremetal.byol.byol_image_burn:
    url: https://images.example.com/debian-12.raw.xz
    image_type: raw
    checksum: "{{ image_sha512 }}"
    checksum_type: sha512
    device: /dev/sda

- name: Copy a BYOL image's files onto the new filesystems, with Basic auth and a private CA
  baremetal.byol.byol_image_burn:
    url: https://images.example.com/byol.qcow2
    image_type: qcow2
    mode: files
    dest: /tmp/a
    http_headers:
      Authorization: "Basic {{ image_credentials | b64encode }}"
    ca_path: /etc/ssl/private-ca.pem

- name: Download and check a BYOL image before the disks are wiped
  baremetal.byol.byol_image_burn:
    url: https://images.example.com/byol.qcow2
    image_type: qcow2
    mode: files
    stage_only: true
    scratch_dir: /mnt/scratch
  register: stage

- name: After partitioning, copy the files of the staged image (or download it onto the new filesystems)
  baremetal.byol.byol_image_burn:
    url: https://images.example.com/byol.qcow2
    image_type: qcow2
    mode: files
    dest: /tmp/a
    staged: "{{ stage.staged_path | default(omit) }}"
    scratch_dir: "{{ '/mnt/scratch' if stage.fits | default(true) else '/tmp/a/.byol-scratch' }}"

- name: Burn in the background and show progress while it runs
  block:
    - name: Start the burn
      baremetal.byol.byol_image_burn:
        url: "{{ image_url }}"
        image_type: qcow2
        device: /dev/nvme0n1
      async: 7200
      poll: 0
      register: burn_job
    - name: Wait, printing progress
      ansible.builtin.async_status:
        jid: "{{ burn_job.ansible_job_id }}"
      register: burn
      until: burn.finished
      retries: 720
      delay: 10
"""

RETURN = r"""
msg:
  description: What was done.
  returned: always
  type: str
plan:
  description: In check mode, what would be done.
  returned: check mode, when a write is needed
  type: dict
checksum:
  description: Hex digest of the downloaded bytes.
  returned: when the image was downloaded or is recorded
  type: str
checksum_type:
  description: Algorithm of RV(checksum) (the requested one, else sha512).
  returned: when the image was downloaded
  type: str
checksum_url:
  description: The checksum file the expected checksum was taken from (without user:password).
  returned: when O(checksum) names a checksum file
  type: str
checksum_headers_sent:
  description: Whether O(http_headers) were sent with the request for the checksum file (same origin as O(url)).
  returned: when O(checksum) names a checksum file
  type: bool
downloaded_bytes:
  description: Bytes downloaded.
  returned: when the image was downloaded
  type: int
image_bytes:
  description: Size of the (decompressed) image written, for qcow2 its virtual size.
  returned: when written
  type: int
virtual_size:
  description: Virtual size of a qcow2 image (or the size of a raw one).
  returned: when known
  type: int
compression:
  description: Compression found in the downloaded bytes (xz, gz, zst, bz2) or null.
  returned: when the image was downloaded
  type: str
phases:
  description: Per phase (download, download+write, write, unpack, copy, verify) the bytes, seconds and bytes per second.
  returned: always
  type: list
  elements: dict
seconds:
  description: Wall time of the module.
  returned: always
  type: float
peak_rss:
  description: Peak resident memory of the module (module_bytes) and of its largest child process.
  returned: always
  type: dict
partition_table:
  description: Partition table type found on the written disk (gpt or dos).
  returned: mode disk, when written
  type: str
partitions:
  description: Partition device nodes of the written disk.
  returned: mode disk, when written
  type: list
  elements: str
marker:
  description: Path of the record of what was written.
  returned: when written
  type: str
attach_method:
  description: How the BYOL image was attached (qemu-nbd or loop).
  returned: mode files, when copied
  type: str
filesystem:
  description: Filesystem of the BYOL image's partition.
  returned: mode files, when copied
  type: str
scratch:
  description: Scratch space used (path, and kind memory or scratch_dir).
  returned: when scratch space was used
  type: dict
reason:
  description: Why the image was (or would be) written, or why nothing was done.
  returned: always
  type: str
disk_differences:
  description: How the disk differed from the record of the image written before (partition table, unique GUIDs, boot
    code, boot loader's area, sampled data), when it did; the image is then written again.
  returned: O(mode=disk) and the disk no longer held the recorded image
  type: list
  elements: str
  sample: ["the disk has no partition table (the image wrote a gpt table)"]
dest_dir:
  description: The target tree of O(mode=files).
  returned: mode files
  type: str
device_size:
  description: Size of O(device) in bytes.
  returned: mode disk
  type: int
written_bytes:
  description: Bytes of a raw image written as data (the rest of RV(image_bytes) was zeroed with BLKZEROOUT, RV(zeroed_bytes)).
  returned: mode disk, raw image, when written
  type: int
zeroed_bytes:
  description: Bytes of all-zero blocks of a raw image that the device zeroed itself (BLKZEROOUT).
  returned: mode disk, raw image, when written
  type: int
qcow2_streamed:
  description: Whether the qcow2 image's clusters were written while it downloaded (else qemu-img convert wrote it).
  returned: mode disk, qcow2 image, when written
  type: bool
qcow2_stream_fallback:
  description: Why the qcow2 image could not be streamed (it was written by qemu-img convert instead).
  returned: when O(qcow2_streaming) was refused by the image
  type: str
gpt_backup_moved:
  description: The backup GPT header and entries were moved to the last sectors of the disk.
  returned: mode disk, GPT image, when written
  type: bool
staged:
  description: With O(stage_only), whether the image was downloaded and checked into scratch space.
  returned: stage_only
  type: bool
staged_path:
  description: The checked copy, to give as O(staged) to the run that copies the files.
  returned: stage_only, when staged
  type: str
fits:
  description: With O(stage_only), whether the image fits in memory or O(scratch_dir).
  returned: stage_only, when the image was looked at
  type: bool
space:
  description:
    - Where a staged image goes or why it does not fit (fits, path, kind, needed_bytes, memory_usable_bytes, scratch_dir,
      scratch_free_bytes, msg).
  returned: stage_only, when the image was looked at
  type: dict
checks:
  description: What was checked on the staged image (or only its first MiB when it does not fit).
  returned: stage_only, when the image was looked at
  type: list
  elements: str
staged_used:
  description: With O(staged), whether the staged copy was used (else the image was downloaded again, RV(staged_reason)).
  returned: when O(staged) was given and a copy was needed
  type: bool
staged_reason:
  description: Why the staged copy was used or not.
  returned: when O(staged) was given and a copy was needed
  type: str
retries:
  description: Every retry of the download, with its reason (C(reason), C(status), C(at_byte), C(wait_seconds), C(retry_after)).
  returned: always
  type: list
  elements: dict
download_resumes:
  description: How many times an interrupted download continued with a C(Range) request.
  returned: always
  type: int
download_restarts:
  description: How many times an interrupted download started again from its first byte (no usable C(Range) support or validator).
  returned: always
  type: int
redirects:
  description: The redirects followed (C(status), C(to) as scheme://host:port, C(headers_sent)).
  returned: when the server redirected
  type: list
  elements: dict
wiped_signatures:
  description: After a failure with part of the image written (for example a checksum mismatch), the partition-table areas were zeroed.
  returned: on such failures
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils._image.burn import run_module
from ansible_collections.baremetal.byol.plugins.module_utils._lock import LOCK_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._module import run_step


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **LOCK_ARGUMENT_SPEC,
            url=dict(type='str', required=True),
            image_type=dict(type='str', required=True, choices=['qcow2', 'raw']),
            mode=dict(type='str', default='disk', choices=['disk', 'files']),
            device=dict(type='path'),
            dest=dict(type='path', default='/tmp/a'),
            checksum=dict(type='str'),
            checksum_type=dict(type='str', choices=['md5', 'sha1', 'sha256', 'sha512']),
            http_headers=dict(type='dict', default={}, no_log=True),
            validate_certs=dict(type='bool', default=True),
            ca_path=dict(type='path'),
            timeout=dict(type='int', default=60),
            retries=dict(type='int', default=9),
            retry_delay=dict(type='float', default=10.0),
            retry_max_time=dict(type='int', default=600),
            scratch_dir=dict(type='path'),
            force=dict(type='bool', default=False),
            state_dir=dict(type='path', default='/var/lib/baremetal-byol'),
            progress_file=dict(type='path', default='/run/baremetal-byol/image_burn.progress'),
            progress_interval=dict(type='int', default=10),
            attach=dict(type='str', default='auto', choices=['auto', 'nbd', 'loop']),
            qcow2_streaming=dict(type='bool', default=True),
            stage_only=dict(type='bool', default=False),
            staged=dict(type='path'),
        ),
        mutually_exclusive=[('stage_only', 'staged')],
        required_if=[('mode', 'disk', ['device'])],
        supports_check_mode=True,
    )
    module.exit_json(**run_step(module, run_module))


if __name__ == '__main__':
    main()
