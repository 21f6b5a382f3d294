# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Write a qcow2 image onto a disk WHILE it downloads, when its layout allows it.

Do not use this from other collections or standalone plugins/modules!

Images made by ``qemu-img convert``/``create`` place the L1 table first and each L2 table
before the data clusters it maps. For such images each data cluster can be written to its
guest offset as soon as it arrives, so download, hashing and writing overlap as for a raw
image. The planner here is pure (no I/O): :class:`Qcow2StreamPlan` is fed the file's bytes in
order and returns the writes to make. Compressed clusters (deflate, as ``qemu-img convert -c``
writes them; cloud images are often made so) are collected as their bytes arrive and inflated
(:meth:`Qcow2StreamPlan.inflated`) exactly as qemu does: the output must fill the cluster.
It refuses (``Unsupported``) anything it does not handle exactly (zstd-compressed clusters,
extended L2 entries, internal snapshots, an L2 table before the L1 table, a data or compressed
cluster that arrives before its L2 table, clusters or L2 tables shared or overlapping, more
clusters than it tracks in bounded memory). On ``Unsupported`` the caller downloads the image again
into scratch space and converts it with ``qemu-img convert``, which rewrites the whole virtual disk.
Guest clusters that received no data (unallocated or zero clusters) are zeroed at the end
(``zero_ranges``).
"""

from __future__ import annotations

import heapq
import struct
import zlib

L1_OFFSET_MASK = 0x00fffffffffffe00
L2_OFFSET_MASK = 0x00fffffffffffe00
L2_COMPRESSED = 1 << 62
L2_ZERO = 1
INCOMPAT_COMPRESSION_TYPE = 0x8
# bounded memory: one byte per guest cluster, one dict entry per data cluster mapped but not yet arrived
MAX_CLUSTERS = 1 << 25
MAX_PENDING = 1 << 21


class Unsupported(Exception):
    """This image cannot be streamed; fall back to qemu-img convert from the downloaded copy."""


class Incomplete(Exception):
    """The file ended before data its tables refer to: a truncated (or damaged) image, never written as complete."""


class Qcow2StreamPlan(object):
    """Feed ``(file_offset, data)`` in order; collect ``(guest_offset, file_offset, length)`` writes."""

    def __init__(self, info, head):
        if info.get('incompatible_features', 0) & ~0x1 & ~0x8:
            # anything but "dirty" (ignored: the copy is read-only) and the compression-type bit
            raise Unsupported('incompatible features 0x%x' % info['incompatible_features'])
        if info.get('nb_snapshots'):
            raise Unsupported('internal snapshots')
        cluster_size = info['cluster_size']
        if cluster_size < 512 or cluster_size > 2 * 1024 * 1024:
            raise Unsupported('cluster size %d' % cluster_size)
        self.cluster_size = cluster_size
        self.virtual_size = info['virtual_size']
        if (self.virtual_size + cluster_size - 1) // cluster_size > MAX_CLUSTERS:
            raise Unsupported('%d clusters of %d bytes (more than %d)' % (
                (self.virtual_size + cluster_size - 1) // cluster_size, cluster_size, MAX_CLUSTERS))
        # compressed cluster descriptors (qcow2 spec): offset in the low x bits, sectors - 1 above them
        cluster_bits = cluster_size.bit_length() - 1
        self.csize_shift = 62 - (cluster_bits - 8)
        self.csize_mask = (1 << (cluster_bits - 8)) - 1
        self.coffset_mask = (1 << self.csize_shift) - 1
        # compression type (v3 header byte 104, when the incompatible bit says the field is there): 0 deflate, 1 zstd
        self.compression_type = 0
        if info.get('incompatible_features', 0) & INCOMPAT_COMPRESSION_TYPE and len(head) > 104:
            self.compression_type = bytearray(head[104:105])[0]
        self.compressed = []       # heap of (host start, host end, guest offset) not yet begun
        self.active = []           # [host start, host end, guest offset, bytearray] being collected
        self.ready = []            # (guest offset, compressed bytes) complete, to inflate
        self.last_compressed_end = None
        self.last_compressed_start = -1
        # qemu puts a new L2 table's first compressed clusters in what is left of the cluster it was filling,
        # just before that L2 table: the last bytes of the stream are kept (once the image has compressed clusters)
        self.tail = b''
        self.tail_start = 0
        self.tail_max = max(2 * cluster_size, min(4 * cluster_size, 4 * 1024 * 1024))
        self.keep_tail = False
        self.l2_entries = cluster_size // 8
        (_magic, _ver, _bo, _bs, _cb, _size, _crypt, l1_size, l1_offset) = struct.unpack('>IIQIIQIIQ', head[:48])
        self.l1_size = l1_size
        self.l1_offset = l1_offset
        self.l1_bytes = bytearray()
        self.l2_at = None          # host offset -> l1 index, once L1 is known
        self.pending_l2 = {}       # host offset -> bytearray being collected
        self.parsed_l2 = set()
        self.data_map = {}         # host cluster offset -> guest offset
        self.written = bytearray((self.virtual_size + cluster_size - 1) // cluster_size)
        self.seen_limit = 0        # bytes of the file seen so far
        self.max_l2_or_data = 0
        self.cut_cluster = None    # a data cluster cut by the end of the last piece
        if l1_size * 8 > 32 * 1024 * 1024:
            raise Unsupported('L1 table of %d entries' % l1_size)

    # -- metadata ------------------------------------------------------------------------------
    def _take(self, start, length, offset, data):
        """Bytes of [start, start+length) present in (offset, data)."""
        lo = max(start, offset)
        hi = min(start + length, offset + len(data))
        if hi <= lo:
            return None, lo
        return data[lo - offset:hi - offset], lo

    def _parse_l1(self, before):
        """Parse the complete L1 table; ``before``: file bytes already passed without it."""
        self.l2_at = {}
        for i in range(self.l1_size):
            entry = struct.unpack('>Q', bytes(self.l1_bytes[i * 8:i * 8 + 8]))[0]
            host = entry & L1_OFFSET_MASK
            if host:
                if host in self.l2_at:
                    raise Unsupported('shared L2 table')
                if host < before:
                    raise Unsupported('an L2 table precedes the L1 table')
                self.l2_at[host] = i

    def _parse_l2(self, host, table):
        self.parsed_l2.add(host)
        l1_index = self.l2_at[host]
        base = l1_index * self.l2_entries
        entries = struct.unpack('>%dQ' % self.l2_entries, bytes(table))
        cs = self.cluster_size
        for i, entry in enumerate(entries):
            if not entry:
                continue
            if entry & L2_COMPRESSED:
                self._add_compressed(entry, (base + i) * cs)
                continue
            data_host = entry & L2_OFFSET_MASK
            if not data_host:
                continue  # zero cluster without allocation (bit 0): zeroed at the end
            guest_cluster = base + i
            if guest_cluster * cs >= self.virtual_size:
                continue
            if data_host < self.seen_limit:
                raise Unsupported('a data cluster precedes its L2 table')
            if data_host in self.data_map:
                raise Unsupported('a data cluster shared by two guest clusters')
            self.data_map[data_host] = guest_cluster * cs
            if len(self.data_map) > MAX_PENDING:
                raise Unsupported('more than %d data clusters mapped before they arrive' % MAX_PENDING)
            if entry & L2_ZERO:
                # allocated but reads as zeroes: do not copy its bytes
                self.data_map[data_host] = None

    def _add_compressed(self, entry, guest):
        if guest >= self.virtual_size:
            return
        if self.compression_type != 0:
            raise Unsupported('compressed clusters of compression type %d (zstd)' % self.compression_type)
        start = entry & self.coffset_mask
        sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
        # the data ends at the end of the sector of its last byte (qemu reads exactly these bytes)
        end = (start & ~511) + sectors * 512
        if start < self.seen_limit and start < self.tail_start:
            raise Unsupported('a compressed cluster precedes its L2 table')
        self.keep_tail = True
        heapq.heappush(self.compressed, (start, end, guest))
        if len(self.compressed) > MAX_PENDING:
            raise Unsupported('more than %d compressed clusters mapped before they arrive' % MAX_PENDING)

    def _collect(self, offset, data):
        """Give the compressed clusters their bytes of this piece; complete ones go to ``ready``."""
        end = offset + len(data)
        while self.compressed and self.compressed[0][0] < end:
            start, stop, guest = heapq.heappop(self.compressed)
            # consecutive compressed clusters share at most the last sector of the first (its rounding);
            # anything more (one cluster's bytes used twice) is not what qemu-img writes
            shared_sector = self.last_compressed_end is not None and start > self.last_compressed_end - 512
            if start <= self.last_compressed_start or (self.last_compressed_end is not None and not shared_sector):
                raise Unsupported('overlapping compressed clusters')
            self.last_compressed_start, self.last_compressed_end = start, stop
            buf = bytearray()
            if start < offset:
                # its first bytes passed before its L2 table: they are in the kept tail
                buf += self.tail[start - self.tail_start:min(stop, offset) - self.tail_start]
            self.active.append([start, stop, guest, buf])
        keep = []
        for ext in self.active:
            start, stop, guest, buf = ext
            lo, hi = max(start + len(buf), offset), min(stop, end)
            if hi > lo:
                buf += data[lo - offset:hi - offset]
            if start + len(buf) == stop:
                self.ready.append((guest, bytes(buf)))
            else:
                keep.append(ext)
        self.active = keep

    def _inflate(self, guest, raw, at_end=False):
        """The cluster's bytes: raw deflate that must fill the whole cluster (as qemu's qcow2_zlib_decompress)."""
        try:
            out = zlib.decompressobj(-12).decompress(raw, self.cluster_size)
        except zlib.error:
            out = b''
        if len(out) != self.cluster_size:
            if at_end:
                raise Incomplete('the file ends (at byte %d) inside a compressed cluster' % self.seen_limit)
            raise Incomplete('the compressed cluster for guest offset %d does not inflate to a whole cluster'
                             % guest)
        self.written[guest // self.cluster_size] = 1
        return out[:min(self.cluster_size, self.virtual_size - guest)]

    def inflated(self):
        """After :meth:`feed`: ``(guest_offset, data)`` of the compressed clusters completed by it, inflated one
        at a time (a generator: only one inflated cluster is held at once)."""
        ready, self.ready = self.ready, []
        for guest, raw in ready:
            yield guest, self._inflate(guest, raw)

    def feed(self, offset, data):
        """Bytes ``data`` at file ``offset`` (in order). Returns [(guest_offset, slice_start, length)]:
        write ``data[slice_start:slice_start+length]`` at ``guest_offset``."""
        end = offset + len(data)
        if self.cut_cluster is not None:
            raise Unsupported('a data cluster spans two pieces')
        if offset != self.seen_limit:
            raise Unsupported('bytes out of order')
        self.tail_start = offset - len(self.tail)
        cs = self.cluster_size
        # L1
        if self.l2_at is None:
            part, _lo = self._take(self.l1_offset + len(self.l1_bytes), self.l1_size * 8 - len(self.l1_bytes),
                                   offset, data)
            if part is not None:
                self.l1_bytes += part
            if len(self.l1_bytes) == self.l1_size * 8:
                # clusters of this piece after the L1 table are still ahead
                self._parse_l1(min(offset, self.l1_offset))
        writes = []
        # clusters in this piece, in order
        first = (offset + cs - 1) // cs * cs if offset % cs else offset
        if offset % cs:
            # continuation of a partially seen cluster: only L2 tables may span pieces
            prev = offset // cs * cs
            if prev in self.pending_l2:
                need = cs - len(self.pending_l2[prev])
                self.pending_l2[prev] += data[:need]
                if len(self.pending_l2[prev]) == cs:
                    self._parse_l2(prev, self.pending_l2.pop(prev))
            elif prev in self.data_map:
                raise Unsupported('unaligned pieces')
        host = first
        run = None
        while host < end:
            if self.l2_at is None:
                host += cs
                continue
            if host in self.l2_at:
                table = data[host - offset:min(end, host + cs) - offset]
                if len(table) == cs:
                    self.seen_limit = host  # entries refer to clusters after this table
                    self._parse_l2(host, table)
                else:
                    self.pending_l2[host] = bytearray(table)
            elif host in self.data_map:
                guest = self.data_map.pop(host)
                if guest is not None:
                    if host + cs > end and self.virtual_size - guest > end - host:
                        # the last piece of a cut file, or a piece boundary inside a cluster (the next feed
                        # says which)
                        self.cut_cluster = host
                        self.data_map[host] = guest
                        break
                    idx = guest // cs
                    self.written[idx] = 1
                    length = min(cs, self.virtual_size - guest)
                    if run is not None and run[0] + run[2] == guest and run[1] + run[2] == host - offset:
                        run[2] += length
                    else:
                        if run is not None:
                            writes.append(tuple(run))
                        run = [guest, host - offset, length]
            host += cs
        if run is not None:
            writes.append(tuple(run))
        if self.compressed or self.active:
            self._collect(offset, data)
        if self.keep_tail:
            if len(data) >= self.tail_max:
                self.tail = bytes(data[len(data) - self.tail_max:])
            else:
                self.tail = (self.tail + bytes(data))[-self.tail_max:]
        self.seen_limit = end
        return writes

    def finish(self):
        """After the last byte: raise Unsupported if mapped data never came; return zero ranges."""
        if self.l2_at is None:
            raise Incomplete('the file ends (at byte %d) before the end of its L1 table' % self.seen_limit)
        missing = [h for h in self.l2_at if h not in self.parsed_l2] + list(self.pending_l2)
        if missing:
            raise Incomplete('the file ends (at byte %d) before %d of its L2 tables' % (self.seen_limit, len(missing)))
        lost = [h for h, g in self.data_map.items() if g is not None]
        if self.cut_cluster is not None:
            raise Incomplete('the file ends (at byte %d) inside a data cluster' % self.seen_limit)
        if lost:
            raise Incomplete('the file ends (at byte %d) before %d of its data clusters'
                             % (self.seen_limit, len(lost)))
        if self.compressed or self.active:
            raise Incomplete('the file ends (at byte %d) before %d of its compressed clusters'
                             % (self.seen_limit, len(self.compressed) + len(self.active)))
        return self.zero_ranges()

    def finish_inflated(self):
        """After the last byte, before :meth:`finish`: the compressed clusters whose last sector the file does not
        hold in full (the last one of a file that is not a multiple of 512 bytes), inflated from the bytes there
        are (qemu reads zeroes past the end of the file; the deflate stream must end before them)."""
        active, self.active = self.active, []
        for start, _stop, guest, buf in active:
            if not buf or start + len(buf) != self.seen_limit:
                raise Incomplete('the file ends (at byte %d) inside a compressed cluster' % self.seen_limit)
            yield guest, self._inflate(guest, bytes(buf), at_end=True)

    def max_file_size(self):
        """An upper bound of the size of a file with this header (no snapshots): every guest cluster
        allocated, its L2 entry, a 64-bit refcount for every cluster, plus 64 MiB of slack."""
        clusters = (self.virtual_size + self.cluster_size - 1) // self.cluster_size
        return clusters * (self.cluster_size + 16) + self.l1_size * 8 + 64 * 1024 * 1024

    def zero_ranges(self):
        """Guest byte ranges [(offset, length)] that received no data, coalesced."""
        cs = self.cluster_size
        out = []
        start = None
        n = len(self.written)
        for i in range(n + 1):
            unwritten = i < n and not self.written[i]
            if unwritten and start is None:
                start = i
            elif not unwritten and start is not None:
                lo = start * cs
                hi = min(i * cs, self.virtual_size)
                out.append((lo, hi - lo))
                start = None
        return out
