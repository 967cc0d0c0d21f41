# _kh_mpl: the matplotlib backend kernels use ("module://_kh_mpl"). Agg renders; plt.show() and
# figures still open at the end of a cell become image/png display_data, then are closed. Each
# figure remembers the kernel that created it, so kernels sharing one interpreter never show
# each other's figures.

import io

from matplotlib.backend_bases import _Backend
from matplotlib.backends.backend_agg import FigureCanvasAgg, FigureManagerBase

import _kh_display
import _kh_streams


class FigureManager(FigureManagerBase):
    def __init__(self, canvas, num):
        super().__init__(canvas, num)
        ctx = _kh_streams.current()
        canvas.figure._kh_kernel = ctx.kernel if ctx is not None else None

    def show(self):
        show_figure(self.canvas.figure)


def _png(figure):
    buf = io.BytesIO()
    figure.canvas.print_figure(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def show_figure(figure):
    import base64
    data = {
        "image/png": base64.b64encode(_png(figure)).decode("ascii"),
        "text/plain": "<Figure size %gx%g with %d Axes>" % (
            figure.bbox.width, figure.bbox.height, len(figure.axes)),
    }
    _kh_display.publish_display_data(data, {})


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
