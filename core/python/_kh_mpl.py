# _kh_mpl: the matplotlib backend kernels use ("module://_kh_mpl"), and the rendering of figures
# as Jupyter's inline backend (matplotlib_inline) does it: the figure's own dpi, facecolor and
# edgecolor, bbox_inches="tight", no image for a figure without axes, a render error reported as
# an execute_error. plt.show() and figures still open at the end of a cell become display_data,
# then are closed; a Figure as a cell's result becomes an execute_result (_kh_display.format
# calls figure_bundle). Each figure remembers the kernel that created it, so kernels sharing one
# interpreter never show each other's figures, and each kernel has its own figure formats
# (kernel option figure_formats, or configure()). Imported only once matplotlib is.

import io

from matplotlib.backend_bases import _Backend
from matplotlib.backends.backend_agg import FigureCanvasAgg, FigureManagerBase

import _kh_display
import _kh_streams

# What IPython's select_figure_formats accepts ("png2x" is "retina", "jpg" is "jpeg"); the
# kernel option's list in core/src/options.c must name the same ones.
FORMATS = ("png", "png2x", "retina", "jpg", "jpeg", "svg", "pdf")
DEFAULT_FORMATS = ("png",)
# matplotlib_inline's InlineBackend.print_figure_kwargs default.
DEFAULT_PRINT_KWARGS = {"bbox_inches": "tight"}


def _kernel(kernel):
    if kernel is None:
        ctx = _kh_streams.current()
        kernel = ctx.kernel if ctx is not None else None
    return kernel


def configure(figure_formats=None, print_figure_kwargs=None, kernel=None):
    """Sets the figure formats (and print_figure keyword arguments) of one kernel: the current
    one unless given. What %config InlineBackend.figure_formats = [...] does in Jupyter; the
    kernel option figure_formats sets the starting value, and a restart goes back to it.
    Raises ValueError for an unknown format, as IPython does."""
    kernel = _kernel(kernel)
    if kernel is None:
        raise RuntimeError("_kh_mpl.configure() needs a kernel")
    if figure_formats is not None:
        if isinstance(figure_formats, str):
            figure_formats = (figure_formats,)
        figure_formats = tuple(figure_formats)
        bad = [f for f in figure_formats if f not in FORMATS]
        if bad:
            raise ValueError("supported formats are: %s not %s" % (
                ",".join(repr(f) for f in FORMATS), ",".join(repr(f) for f in bad)))
        kernel.figure_formats = figure_formats
    if print_figure_kwargs is not None:
        kernel.print_figure_kwargs = dict(print_figure_kwargs)


def _formats(kernel):
    """The kernel's formats: configure()'s choice (reset() forgets it), else the kernel
    option's (set when the kernel was opened), else png."""
    if kernel is None:
        return DEFAULT_FORMATS
    f = getattr(kernel, "figure_formats", None)
    if f is None:
        f = getattr(kernel, "figure_formats_option", None)
    return DEFAULT_FORMATS if f is None else f


def _print_kwargs(kernel):
    kw = getattr(kernel, "print_figure_kwargs", None) if kernel is not None else None
    return DEFAULT_PRINT_KWARGS if kw is None else kw


def print_figure(fig, fmt="png", bbox_inches="tight", **kwargs):
    """The figure as bytes (str for svg), rendered as IPython.core.pylabtools.print_figure
    renders it for the inline backend: its own dpi (doubled for retina), its own face and edge
    colours (not savefig.*), a tight bounding box. Kept here rather than imported from IPython
    so that a kernel that draws figures does not pay IPython's import (~260 ms)."""
    dpi = fig.dpi
    if fmt == "retina":
        dpi = dpi * 2
        fmt = "png"
    kw = {"format": fmt, "facecolor": fig.get_facecolor(), "edgecolor": fig.get_edgecolor(),
          "dpi": dpi, "bbox_inches": bbox_inches}
    kw.update(kwargs)
    if fig.canvas is None:
        from matplotlib.backend_bases import FigureCanvasBase
        FigureCanvasBase(fig)
    buf = io.BytesIO()
    fig.canvas.print_figure(buf, **kw)
    data = buf.getvalue()
    return data.decode("utf-8") if fmt == "svg" else data


def _png_size(data):
    """(width, height) from a PNG's IHDR chunk."""
    import struct
    return struct.unpack(">II", data[16:24])


def _report_error(exc):
    """A figure that cannot be rendered gives an execute_error event of the current request,
    as IPython's formatters report theirs (showtraceback), and the cell goes on: the reply
    stays "ok", as ipykernel's does. The traceback is the cell's part of it, as for any error
    (none when the figure is shown after the cell's code ended)."""
    ctx = _kh_streams.current()
    if ctx is None:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        return
    err = ctx.kernel._format_error(exc)
    ctx.kernel.out.flush()
    ctx.kernel.emit(ctx.exec_id, "execute_error", err)


def figure_bundle(fig, include=None, exclude=None, kernel=None):
    """(data, metadata) for a Figure, as Jupyter shows one: text/plain is its repr, and one
    entry per figure format of the kernel, none for a figure without axes. A format that fails
    to render is reported (execute_error) and left out. IPython's display formatter can take
    this as the mimebundle printer for Figure."""
    kernel = _kernel(kernel)
    data = {}
    metadata = {}

    def wanted(mime):
        return (include is None or mime in include) and (exclude is None or mime not in exclude)

    # print_figure's rule: an empty figure would give a blank image.
    if fig.axes or fig.lines:
        formats = set(_formats(kernel))
        kwargs = _print_kwargs(kernel)
        jobs = []
        if "png" in formats:
            jobs.append(("image/png", "png"))
        # IPython registers retina after png, so it wins when both are asked for.
        if "retina" in formats or "png2x" in formats:
            jobs = [j for j in jobs if j[0] != "image/png"] + [("image/png", "retina")]
        if "jpg" in formats or "jpeg" in formats:
            jobs.append(("image/jpeg", "jpg"))
        if "svg" in formats:
            jobs.append(("image/svg+xml", "svg"))
        if "pdf" in formats:
            jobs.append(("application/pdf", "pdf"))
        for mime, fmt in jobs:
            if not wanted(mime):
                continue
            try:
                value = print_figure(fig, fmt, **kwargs)
            except Exception as exc:
                _report_error(exc)
                continue
            if fmt == "retina":
                w, h = _png_size(value)
                metadata[mime] = {"width": w // 2, "height": h // 2}
            data[mime] = value  # bytes but for svg: the kernel's emit sends them (binary)
    if wanted("text/plain"):
        try:
            data["text/plain"] = repr(fig)
        except Exception as exc:
            _report_error(exc)
            data["text/plain"] = "<%s object>" % type(fig).__name__
    return data, metadata


def _is_light(colors):
    from matplotlib import colors as mcolors
    rgba = mcolors.to_rgba_array(colors)
    return rgba[:, :3].dot((.299, .587, .114)) > .5


def display_metadata(fig):
    """What matplotlib_inline adds to a shown figure: needs_background when the figure is
    transparent and its tick labels all light or all dark, so that a front end can put a
    background behind it."""
    from matplotlib import colors as mcolors
    if mcolors.to_rgba(fig.get_facecolor())[3] >= .5:
        return {}
    light = _is_light([label.get_color() for axes in fig.axes
                       for axis in (axes.xaxis, axes.yaxis) for label in axis.get_ticklabels()])
    if light.size and (light == light[0]).all():
        return {"needs_background": "dark" if light[0] else "light"}
    return {}


def show_figure(figure):
    data, metadata = figure_bundle(figure)
    metadata.update(display_metadata(figure))
    _kh_display.publish_display_data(data, metadata)


class FigureManager(FigureManagerBase):
    def __init__(self, canvas, num):
        super().__init__(canvas, num)
        ctx = _kh_streams.current()
        canvas.figure._kh_kernel = ctx.kernel if ctx is not None else None

    def show(self):
        """fig.show(): nothing, as with Jupyter's inline backend on a headless machine; the
        figure is shown by plt.show() or at the end of the cell."""


def flush_figures(kernel):
    """Shows and closes every open figure that `kernel` created."""
    import matplotlib.pyplot as plt
    from matplotlib._pylab_helpers import Gcf
    for manager in list(Gcf.get_all_fig_managers()):
        fig = manager.canvas.figure
        if getattr(fig, "_kh_kernel", None) is kernel:
            try:
                show_figure(fig)
            finally:
                plt.close(fig)


def close_figures(kernel):
    import matplotlib.pyplot as plt
    from matplotlib._pylab_helpers import Gcf
    for manager in list(Gcf.get_all_fig_managers()):
        if getattr(manager.canvas.figure, "_kh_kernel", None) is kernel:
            plt.close(manager.canvas.figure)


class FigureCanvas(FigureCanvasAgg):
    manager_class = FigureManager


@_Backend.export
class _BackendKernelhost(_Backend):
    FigureCanvas = FigureCanvas
    FigureManager = FigureManager

    @classmethod
    def show(cls, *args, block=None, **kwargs):
        ctx = _kh_streams.current()
        if ctx is None:
            return
        flush_figures(ctx.kernel)
