import numpy as np
import pytest

from mmroute.features.types import Features


def test_features_validate_and_subset():
    f = Features(fused=np.ones((4, 3)), text=np.ones((4, 2)), image=np.zeros((4, 5)),
                 image_mask=[True, False, True, False])
    assert f.fused.dtype == np.float32 and len(f) == 4 and f.n_features == 3
    s = f.subset(np.array([2, 3]))
    assert s.image.shape == (2, 5) and s.image_mask.tolist() == [True, False]
    with pytest.raises(ValueError, match="text features must have shape"):
        Features(fused=np.ones((4, 3)), text=np.ones((3, 2)))
    assert Features.from_array(np.eye(3)).text.shape == (3, 3)
