import sys, time, math
sys.path.insert(0, '/tmp/elugrad')
import numpy as np
from truth import truth
from ntkfast.bivariate import elu_dual_grad, elu_dual
alpha_sel = 1.6732632423543772848170429916717
worst = 0
for alpha in (1.0, alpha_sel, 0.5):
  for (sxx, syy) in ((1.0, 1.0), (0.7, 2.3), (1e-4, 1e-4), (40.0, 40.0), (1e-4, 40.0), (3.0, 0.2)):
    for rho in (0.3, -0.6, 0.9, 1-1e-3, 1-1e-6, 1-1e-9, -(1-1e-3), -(1-1e-6), -(1-1e-9)):
        sxy = rho * math.sqrt(sxx*syy)
        t0=time.time(); T = truth(sxx, syy, sxy, alpha); t1=time.time()
        C = np.array(elu_dual_grad(sxx, syy, sxy, alpha, 1e-12))
        assert C[0]==elu_dual(sxx,syy,sxy,alpha,1e-12)[0]
        e = np.abs(C - T) / np.abs(T).max()
        ee = np.abs(C-T)/np.maximum(np.abs(T),1e-300)
        worst=max(worst,e.max())
        print(f"a={alpha:.3f} s=({sxx},{syy}) rho={rho:+.9f} err/max={e.max():.1e} per-q rel max={ee.max():.1e} argmax={ee.argmax()} t={t1-t0:.2f}s")
print("worst", worst)
