"""The live view of a run: the rich display and the plain line-per-event output.

Example::

    from lrsup.supervisor.view import make_display
    display = make_display()        # LiveDisplay on a terminal, PlainDisplay otherwise
"""

from lrsup.supervisor.view.display import Display, LiveDisplay, PlainDisplay, make_display

__all__ = ["Display", "LiveDisplay", "PlainDisplay", "make_display"]
