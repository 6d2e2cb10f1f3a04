"""Array types of mmroute's typed signatures, defined once (numpy.typing).

Functions that convert their input with ``np.asarray`` accept :data:`ArrayLike`; what they return
(and what containers such as :class:`~mmroute.features.Features` hold after their checks) is typed
by dtype: :data:`FloatArray` (float64 scores, costs, outcomes), :data:`Float32Array` (features, ONNX
inputs), :data:`BoolArray` (masks), :data:`IntArray` (int64 model choices), :data:`IndexArray`
(``np.argmax``/``np.argsort`` results), :data:`ObjectArray` (string columns) and
:data:`GenericArray` (a column of any dtype).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ArrayLike", "FloatArray", "Float32Array", "BoolArray", "IntArray", "IndexArray", "ObjectArray",
           "GenericArray"]

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
IndexArray = NDArray[np.intp]
ObjectArray = NDArray[np.object_]
# Quoted: np.generic is subscriptable only in numpy >= 2 (the stubs' generic[item type]).
GenericArray = NDArray["np.generic[object]"]
