import warnings, numpy as np, ntkfast as nf
from ntkfast.kernel_grad import kernel_with_gradient
from ntkfast.bivariate import elu_dual
from ntkfast.recursion import step
from ntkfast import spec
def closed_kernel(arch, X, get):
    act = arch.activation
    first, steps = arch.layer_coefficients(X.shape[1])
    G = X @ X.T
    n = len(X)
    s = first[0]*G + first[1]; t = first[2]*G + first[3]
    for layer in range(steps.shape[0]):
        K = np.empty_like(s); Kd = np.empty_like(s)
        for i in range(n):
            for j in range(n):
                K[i,j], Kd[i,j] = elu_dual(s[i,i], s[j,j], s[i,j], act.alpha, 1e-12)
        sc = act.scale**2
        s, t = step(K*sc, Kd*sc, s, t, *steps[layer])
    return s if get == "nngp" else t
rng=np.random.default_rng(3)
base=rng.standard_normal((6,3))
X=np.concatenate([base, base+1e-4*rng.standard_normal(base.shape), base[:2]])
for name in ("elu","selu"):
  for param in ("ntk","standard"):
    for depth in (1,2,3):
      def arch(w=1.3,b=0.2): return nf.MLP(depth=depth, activation=name, W_std=w, b_std=b, parameterization=param)
      h=1e-3
      for get in ("nngp","ntk"):
        K,dK=kernel_with_gradient(arch(),X,get=get)
        ref=closed_kernel(arch(),X,get)
        fd=[]
        for dw,db in ((1,0),(0,1)):
          f=lambda t: closed_kernel(arch(1.3*np.exp(t*dw),0.2*np.exp(t*db)),X,get)
          d1=(f(h)-f(-h))/(2*h); d2=(f(h/2)-f(-h/2))/h
          fd.append((4*d2-d1)/3)
        fd=np.stack(fd,-1)
        e=np.abs(dK-fd)/np.abs(fd).max()
        i=np.unravel_index(e.argmax(), e.shape)
        print(name,param,depth,get,"K err %.1e"%(np.abs(K-ref).max()/np.abs(ref).max()),"dK err %.1e"%e.max(), i)
