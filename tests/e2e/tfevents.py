"""Reads TensorBoard event files independently of dtrain's C++ code (test helper).

    import tfevents
    tfevents.load_protos("build/tests/e2e/tbproto")   # protoc --python_out of runtime/tensorboard
    for event in tfevents.read_events(path): ...       # records checked with python3-crc32c
    view = tfevents.tensorboard_view(out_dir)          # what TensorBoard would plot

The record framing (uint64 length, uint32 masked CRC32C of the length, data, uint32
masked CRC32C of the data, little-endian) is parsed here with struct and checked with
the crc32c module; each record is decoded as an Event with python3-protobuf.
"""

import os
import struct
import sys

import crc32c

EVENT_PREFIX = "events.out.tfevents."
_pb = None


def load_protos(proto_py_dir):
    """Imports runtime/tensorboard/event_pb2.py generated into proto_py_dir."""
    global _pb
    sys.path.insert(0, proto_py_dir)
    from runtime.tensorboard import event_pb2  # noqa: E402 (generated at build time)
    _pb = event_pb2


def masked_crc32c(data):
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


class BadRecord(Exception):
    pass


def read_records(path):
    """The data of every record of the file; raises BadRecord on a CRC or length error."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise BadRecord("%s: header cut short at offset %d" % (path, pos))
        (length,) = struct.unpack_from("<Q", data, pos)
        (length_crc,) = struct.unpack_from("<I", data, pos + 8)
        if length_crc != masked_crc32c(data[pos:pos + 8]):
            raise BadRecord("%s: length CRC mismatch at offset %d" % (path, pos))
        end = pos + 12 + length
        if end + 4 > len(data):
            raise BadRecord("%s: record cut short at offset %d" % (path, pos))
        payload = data[pos + 12:end]
        (data_crc,) = struct.unpack_from("<I", data, end)
        if data_crc != masked_crc32c(payload):
            raise BadRecord("%s: data CRC mismatch at offset %d" % (path, pos))
        out.append(payload)
        pos = end + 4
    return out


def read_events(path):
    """Every Event of the file, decoded."""
    events = []
    for payload in read_records(path):
        event = _pb.Event()
        event.ParseFromString(payload)
        events.append(event)
    return events


def event_files(log_dir):
    """The event files of log_dir in the order TensorBoard reads them (lexicographic)."""
    return sorted(os.path.join(log_dir, n) for n in os.listdir(log_dir)
                  if n.startswith(EVENT_PREFIX))


def is_session_start(event):
    return (event.WhichOneof("what") == "session_log" and
            event.session_log.status == _pb.SessionLog.START)


def tensorboard_view(log_dir):
    """{tag: [(step, value, wall_time), ...]} as TensorBoard's plugin_event_accumulator
    keeps them: files in name order; the first SessionLog START of the run is a start,
    each later one a restart that drops every scalar with step >= its step (needs
    file_version "brain.Event:N" with N >= 2, as _MaybePurgeOrphanedData checks)."""
    scalars, seen_start, version = {}, False, None
    for path in event_files(log_dir):
        for event in read_events(path):
            kind = event.WhichOneof("what")
            if kind == "file_version":
                version = float(event.file_version.split(":", 1)[1])
            elif is_session_start(event):
                if seen_start and version is not None and version >= 2:
                    for tag in scalars:
                        scalars[tag] = [s for s in scalars[tag] if s[0] < event.step]
                seen_start = True
            elif kind == "summary":
                for v in event.summary.value:
                    scalars.setdefault(v.tag, []).append((event.step, v.simple_value,
                                                          event.wall_time))
    return scalars
