"""A small RTSP server for the tests: serves H.264 (or H.265) at rtsp://127.0.0.1:PORT/test.

Run it with the system Python (``/usr/bin/python3``), which has PyGObject and
gst-rtsp-server; the project's venv cannot import ``gi``. It serves GStreamer's
``videotestsrc`` (a live pattern) or, with ``--clip``, a real video file played once
at its own rate, both encoded as they are served; or, with ``--stream``, an H.264 or H.265
elementary stream encoded beforehand (``tests/rtsp.py``'s ``encoded_clip``), sent as it is,
over and over, at its own rate: a camera's stream that costs the server no encoding, so
that a benchmark of decoding at full HD measures the decoders, not the encoder beside
them. Everything it opens, TCP and the UDP ports for RTP, is on 127.0.0.1.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402
from rtsp import READY  # noqa: E402 - beside this script, stdlib only

ADDRESS = "127.0.0.1"
MOUNT = "/test"
# UDP ports the server may use for RTP/RTCP. Without a pool, gst-rtsp-server binds them
# on every interface.
RTP_PORTS = (40000, 49999)
# Encoder per codec, with a keyframe every 10 frames.
ENCODERS = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 threads=1",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=10",
}
PARSER = "parse"
"""The name of a pre-encoded stream's parser, whose frames get their presentation times."""


def payloader(codec: str) -> str:
    """Return the RTP payloader of ``codec``, the media's stream, with its parameter sets every second."""
    return f"rtp{codec}pay name=pay0 pt=96 config-interval=1"


def launch_line(clip: str | None, width: int, height: int, fps: int, codec: str = "h264") -> str:
    """Return the media factory's pipeline: a source, then ``codec`` with frequent keyframes.

    A keyframe every 10 frames lets a reader that joins (or rejoins) mid-stream start
    decoding within a second.
    """
    if clip:
        source = f'filesrc location="{clip}" ! decodebin'
    else:
        caps = f"video/x-raw,width={width},height={height},framerate={fps}/1"
        source = f"videotestsrc is-live=true ! {caps}"
    return f"( {source} ! videoconvert ! {ENCODERS[codec]} ! {payloader(codec)} )"


def stream_launch_line(stream: str, codec: str) -> str:
    """Return the media factory's pipeline for a pre-encoded elementary stream: looped, as it is.

    ``multifilesrc`` hands the whole file over again and again; the parser cuts it into
    frames and times them at the stream's own rate, carrying on across the seams, so the
    loop is one stream without end. Its frames are then paced in real time by the
    server's sinks.
    """
    return f'( multifilesrc location="{stream}" loop=true ! {codec}parse name={PARSER} ! {payloader(codec)} )'


def present_at_decode_time(server: GstRtspServer.RTSPServer) -> None:
    """Give each frame of a pre-encoded stream's media its decoding time as its presentation time.

    The parser of an elementary stream, which holds no timestamps, times frames by their
    decoding order only, and the RTP payloader (its RTP timestamps) needs presentation
    times. The streams ``encoded_clip`` makes have no B-frames, so both are the same.
    """

    def stamp(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        frame = info.get_buffer()
        frame.pts = frame.dts
        return Gst.PadProbeReturn.OK

    def configure(factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        parser = media.get_element().get_by_name(PARSER)
        parser.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, stamp)

    server.get_mount_points().match(MOUNT)[0].connect("media-configure", configure)


def make_server(port: int, launch: str) -> GstRtspServer.RTSPServer:
    """Build a server on ``127.0.0.1:port`` with one shared media mounted at ``/test``."""
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range(ADDRESS, ADDRESS, *RTP_PORTS, 0)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    factory.set_address_pool(pool)
    server = GstRtspServer.RTSPServer()
    server.set_address(ADDRESS)
    server.set_service(str(port))
    server.get_mount_points().add_factory(MOUNT, factory)
    return server


def serve(server: GstRtspServer.RTSPServer, port: int) -> None:
    """Listen, say so on stdout (the test rig waits for the word), and serve until killed."""
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on {ADDRESS}:{port}")
    print(READY, flush=True)  # the port is ours: a probe of it before this could meet another socket
    GLib.MainLoop().run()


def main() -> None:
    """Parse the arguments and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clip", help="video file to serve instead of videotestsrc")
    parser.add_argument("--stream", help="an elementary stream of --codec to serve looped, as it is")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    args = parser.parse_args()
    Gst.init(None)
    if args.stream:
        server = make_server(args.port, stream_launch_line(args.stream, args.codec))
        present_at_decode_time(server)
    else:
        server = make_server(args.port, launch_line(args.clip, args.width, args.height, args.fps, args.codec))
    serve(server, args.port)


if __name__ == "__main__":
    main()
