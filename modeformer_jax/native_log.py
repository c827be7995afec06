"""Keeps the native libraries' start-up chatter off the user's stderr.

MediaPipe's C++ graph (absl logging), TensorFlow Lite and protobuf write to file descriptor
2 directly, from their own threads and at moments of their choosing (graph start, first
inference, a detector first used on a later frame), so redirecting fd 2 around our calls
lets some lines through and hides real errors. No environment variable silences them
(GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL, TFLITE_LOG_SEVERITY and ABSL_MIN_LOG_LEVEL were
tried with mediapipe 0.10.21: every line still appears).

``silence()`` instead points fd 2, once and for the whole process, at a pipe (a pseudo
terminal when stderr is a terminal, so that ``isatty`` and progress bars behave as before)
read by a small filter process. The filter drops the known noise (``NOISE``) and forwards
everything else, Python tracebacks and native errors included, to the real stderr. It is a
separate process so that what a crashing process wrote last still comes out.

``MODEFORMER_VERBOSE=1`` in the environment, ``set_verbose(True)`` or a CLI's ``--verbose``
turns the filter off (worker processes inherit the environment variable).

Run as a script, this file is the filter (standard library only: it starts in ~40 ms).
"""
import atexit
import os
import re
import select
import subprocess
import sys

ENV = "MODEFORMER_VERBOSE"
# Lines (or the end of a line, after a progress bar's text) that are never the project's
# words: measured on detect, QC and prepare runs with mediapipe 0.10.21.
NOISE = re.compile(
    rb"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|INFO: Initialized TensorFlow Lite runtime\."
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    # absl/glog INFO and WARNING lines: I0000 00:00:1796417521.706902  9689 file.cc:114] ...
    # (ERROR and FATAL lines pass).
    rb"|[IW]\d{4} [\d:.]+ +\d+ [^\s\]]+:\d+\] "
    # protobuf's upb runtime, printed while mediapipe imports: harmless.
    rb"|AttributeError: 'MessageFactory' object has no attribute 'GetPrototype'"
    # The GPU compiler's plugin on a machine without a GPU (plan --target h100-8): expected.
    rb"|cuda_plugin_extension is not found\.")
HOLD_S = 0.05   # an unfinished line (a progress bar) waits this long for the rest

_state: dict = {}


def verbose() -> bool:
  """Whether native log lines are shown (``MODEFORMER_VERBOSE`` set and not 0)."""
  return os.environ.get(ENV, "") not in ("", "0")


def set_verbose(on: bool = True) -> None:
  """Shows (``True``) or filters native log lines in this process and the workers it
  starts from now on; turning it on removes a filter already in place."""
  os.environ[ENV] = "1" if on else "0"
  if on:
    _restore()


def strip_noise(line: bytes) -> bytes:
  """``line`` without its noise: empty for a noise line, the text before the noise when a
  native line was written after a progress bar's unfinished line, else unchanged."""
  m = NOISE.search(line)
  return line if m is None else line[:m.start()]


class LineFilter:
  """Incremental ``strip_noise`` over a byte stream: complete lines go out as soon as they
  arrive, an unfinished one waits for the rest (or ``flush``)."""

  def __init__(self):
    self._tail = b""

  def feed(self, data: bytes) -> bytes:
    """What to forward now of ``data`` (which follows the earlier feeds)."""
    *lines, self._tail = (self._tail + data).split(b"\n")
    return b"".join(strip_noise(line + b"\n") for line in lines)

  def flush(self) -> bytes:
    """The unfinished line, filtered (the writer has paused or closed)."""
    out, self._tail = strip_noise(self._tail), b""
    return out

  @property
  def holding(self) -> bool:
    return bool(self._tail)


def _serve(src: int, dst: int) -> None:
  """The filter process: ``src`` through ``LineFilter`` to ``dst`` until every writer is
  gone."""
  import signal
  # Ctrl-C reaches the whole process group: stay alive to pass on the traceback it causes.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  filt = LineFilter()
  while True:
    if filt.holding and not select.select([src], [], [], HOLD_S)[0]:
      dst = _write(dst, filt.flush())
      continue
    try:
      data = os.read(src, 1 << 16)
    except OSError:   # a pseudo terminal whose last writer closed: EIO
      data = b""
    if not data:
      _write(dst, filt.flush())
      return
    dst = _write(dst, filt.feed(data))


def _write(fd: int | None, data: bytes) -> int | None:
  """Writes all of ``data``; ``None`` once the reader has gone (the writers are still
  drained, so they never block or fail on a full pipe)."""
  try:
    while fd is not None and data:
      data = data[os.write(fd, data):]
  except OSError:
    return None
  return fd


def silence() -> None:
  """Filters fd 2 of this process and its future children (see the module docstring);
  a no-op when verbose, when already done, or when there is no usable fd 2."""
  if verbose() or _state:
    return
  try:
    saved = os.dup(2)
  except OSError:
    return
  if os.isatty(saved):
    import termios
    reader, writer = os.openpty()
    attrs = termios.tcgetattr(writer)
    attrs[1] &= ~termios.OPOST   # pass "\n" through as written, no "\r\n"
    termios.tcsetattr(writer, termios.TCSANOW, attrs)
    _copy_window_size(saved, writer)
  else:
    reader, writer = os.pipe()
  try:
    proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)],
                            stdin=reader, stdout=saved, stderr=saved)
  except OSError:   # no interpreter to start: leave stderr as it is
    for fd in (reader, writer, saved):
      os.close(fd)
    return
  os.close(reader)
  if sys.stderr is not None:
    sys.stderr.flush()
  os.dup2(writer, 2)
  os.close(writer)
  _state.update(saved=saved, proc=proc, pid=os.getpid(), fd2=_identity(2))
  atexit.register(_restore)


def _copy_window_size(src: int, dst: int) -> None:
  import fcntl
  import termios
  try:
    fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))
  except OSError:
    pass


def _identity(fd: int) -> tuple[int, int] | None:
  try:
    st = os.fstat(fd)
  except OSError:   # closed
    return None
  return st.st_dev, st.st_ino


def _restore() -> None:
  """Points fd 2 back at the real stderr and lets the filter finish (at exit, or when
  verbose is turned on); leaves fd 2 alone if someone else has redirected it since."""
  if not _state or _state["pid"] != os.getpid():
    return
  if sys.stderr is not None:
    sys.stderr.flush()
  if _identity(2) == _state["fd2"]:
    os.dup2(_state["saved"], 2)
  os.close(_state["saved"])
  try:
    # The filter ends once it has passed on the last lines; worker processes still
    # holding the pipe keep it running, and it ends after them.
    _state["proc"].wait(timeout=0.5)
  except subprocess.TimeoutExpired:
    pass
  _state.clear()


if __name__ == "__main__":
  _serve(0, 1)
