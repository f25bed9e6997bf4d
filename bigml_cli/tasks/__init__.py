"""One task per kind of data (image, table, text, language model): the only code that knows a kind.

`task_for(kind, input spec or dataset)` gives the task; each module in this package registers one, so a
new kind (sequence pairs, a pretrained backbone with a new head) is one new file here.
"""

from bigml_cli.registry import import_all
from bigml_cli.tasks.base import TASKS, Classifier, Streams, Task, load_for, task_for  # noqa: F401

import_all(__name__, __path__)
